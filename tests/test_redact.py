"""Redaction (engine/redact.py): snapshots and log messages hide values whose name says they are
secret.  Unit tests on real frames, then one run end to end: `python -m fastattach --production`,
a real DAP client, the real pydevd, the `fastattach.probe` log of the debuggee."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from _e2e import kill_if_running
from dap_schema import assert_valid

import fastattach
from fastattach import _api, _options
from fastattach.engine import production, redact
from fastattach.net.client import DAPClient

SECRET = "hunter2-s3cr3t"
DEFAULT = redact.rules_for(_options.DEFAULTS)


class Account:
    def __init__(self):
        self.user = "alice"
        self.api_token = SECRET

    def __repr__(self):   # a repr that would leak it
        return f"Account({self.user}, {self.api_token})"


class Slotted:
    __slots__ = ("name", "Private_Key")

    def __init__(self):
        self.name, self.Private_Key = "k1", SECRET


class Vault:
    """Redacted by type (redact_types), whatever its name."""

    def __repr__(self):
        return f"Vault({SECRET})"


def frame_with_secrets():
    import collections
    import sys as _sys

    password = SECRET   # noqa: F841
    DB_PASSWD = SECRET   # noqa: F841
    headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET, "accept": "json"}   # noqa: F841
    request = {"user": "alice", "nested": {"Set-Cookie": SECRET, "ok": 1}, "list": [{"session_id": SECRET}]}   # noqa: F841
    ordered = collections.OrderedDict(token=SECRET, plain="visible")   # noqa: F841
    account = Account()   # noqa: F841
    slotted = Slotted()   # noqa: F841
    vault = Vault()   # noqa: F841
    user = "alice"   # noqa: F841
    return _sys._getframe()


def test_names_match_case_insensitively_as_substrings():
    for name in ("password", "DB_PASSWORD", "userPassword", "X-Api-Key", "csrftoken", "Set-Cookie",
                 "session_id", "PRIVATE-KEY", "credit_card_number", "ssn", "aws_secret_access_key"):
        assert DEFAULT.name_matches(name), name
    for name in ("user", "items", "path", "count", "", None, 3):
        assert not DEFAULT.name_matches(name), name
    assert not redact.Rules(()).name_matches("password"), "an empty list redacts nothing"


def test_snapshot_redacts_locals_keys_attributes_and_types():
    frame = frame_with_secrets()
    rules = redact.Rules(DEFAULT.names, (Vault,))
    snap = production.capture(frame, breakpoint_id=1, file="f.py", line=1, max_bytes=32768, frames=1, depth=5,
                              repr_chars=400, rules=rules)
    text = json.dumps(snap)
    assert SECRET not in text
    local = snap["frames"][0]["locals"]
    assert local["password"] == local["DB_PASSWD"] == local["vault"] == "<redacted>"
    assert local["user"] == "'alice'"
    assert "'Authorization': <redacted>" in local["headers"] and "'accept': 'json'" in local["headers"]
    assert "'Set-Cookie': <redacted>" in local["request"]
    assert "'list': [{...}]" in local["request"], "deeper than reprlib's two levels: left out, not shown"
    assert "'token': <redacted>" in local["ordered"] and "'plain': 'visible'" in local["ordered"]
    assert local["account"] == "Account(user='alice', api_token=<redacted>)"
    assert local["slotted"] == "Slotted(name='k1', Private_Key=<redacted>)"
    # password, DB_PASSWD, vault; Authorization, X-Api-Key; Set-Cookie; token; api_token; Private_Key
    assert snap["redacted"] == 9


def test_snapshot_redacts_by_default_and_by_type_name():
    frame = frame_with_secrets()
    snap = production.capture(frame, breakpoint_id=1, file="f.py", line=1, max_bytes=32768, frames=1, depth=5,
                              repr_chars=400)
    assert snap["frames"][0]["locals"]["password"] == "<redacted>", "capture() redacts with no rules given"
    assert SECRET in snap["frames"][0]["locals"]["vault"], "Vault is not a default type"
    by_name = redact.Rules(DEFAULT.names, (f"{__name__}.Vault",))
    snap = production.capture(frame, breakpoint_id=1, file="f.py", line=1, max_bytes=32768, frames=1, depth=5,
                              repr_chars=400, rules=by_name)
    assert snap["frames"][0]["locals"]["vault"] == "<redacted>"


class Touchy:
    """Records which attributes a log message read."""

    def __init__(self):
        self.read = []

    def __getattr__(self, name):
        self.read.append(name)
        return SECRET


def test_log_template_never_evaluates_a_sensitive_expression():
    touchy = Touchy()   # noqa: F841 (read by the template through the frame)
    password = SECRET   # noqa: F841
    request = {"token": SECRET, "user": "alice"}   # noqa: F841
    i = 7   # noqa: F841
    frame = sys._getframe()
    template = redact.Template.from_log_message(
        "i={i} pw={password} t={touchy.auth_token} name={touchy.name} req={request} "
        "key={request['token']} {{literal}} 100%", DEFAULT)
    text, count = template.render(frame)
    assert text == ("i=7 pw=<redacted> t=<redacted> name=" + SECRET + " req={'token': <redacted>, 'user': 'alice'} "
                    "key=<redacted> {literal} 100%")
    assert count == 4
    assert touchy.read == ["name"], "the sensitive attribute was never read"


def test_pydevd_logpoint_expressions_give_the_same_template():
    # pydevd's convert_dap_log_message_to_expression() forms (the end-to-end test below runs the real one).
    token, i = SECRET, 3   # noqa: F841
    frame = sys._getframe()
    for expression, expected, count in [("'i=%s token=%s' % (i, token,)", "i=3 token=<redacted>", 1),
                                        ("'no expressions, 100%'", "no expressions, 100%", 0),
                                        ("'sum=%s, %s' % (i + 1, [i] * 2,)", "sum=4, [3, 3]", 0)]:
        template = redact.Template.from_pydevd_expression(expression, DEFAULT)
        assert template.render(frame) == (expected, count), expression
    assert redact.Template.from_pydevd_expression("i + 1", DEFAULT) is None
    assert redact.Template.from_log_message("{unbalanced", DEFAULT).render(frame)[0] == \
        "<invalid log message expression>"


def test_a_failing_part_makes_the_message_its_error_as_pydevd_does():
    # pydevd evaluates "'a %s %s' % (total, 1/0,)" as one expression: its message is the error alone.
    total = 10   # noqa: F841
    text, _ = redact.Template.from_log_message("plain {total} {1/0}", DEFAULT).render(sys._getframe())
    assert text == "division by zero"


@pytest.fixture
def options():
    saved = _api.session().options
    yield
    fastattach.configure(**saved)


def test_configure_sets_and_checks_the_lists(options):
    fastattach.configure(redact_names=["PIN", "x-auth"], redact_types=[Vault, "decimal.Decimal"])
    assert _api.get_option("redact_names") == ("pin", "x_auth")
    assert _api.get_option("redact_types") == (Vault, "decimal.Decimal")
    rules = redact.rules_for(_api.session().options)
    assert rules.name_matches("user_pin") and rules.name_matches("X-Auth-Header") and not rules.name_matches("pw")
    fastattach.configure(redact_names="password, token")   # the --configure-redact_names form
    assert _api.get_option("redact_names") == ("password", "token")
    for name, bad in [("redact_names", [""]), ("redact_names", 5), ("redact_names", [3]),
                      ("redact_types", ["Decimal"]), ("redact_types", [42])]:
        with pytest.raises(ValueError, match=name):
            fastattach.configure(**{name: bad})
    assert _options.parse_text("redact_names", "a,b") == "a,b"


TARGET = textwrap.dedent("""
    import logging, sys, time

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("PROBE %(probe_kind)s redacted=%(probe_redacted)s %(message)s"))
    probe_log = logging.getLogger("fastattach.probe")
    probe_log.addHandler(handler)
    probe_log.setLevel(logging.INFO)

    def login(user, password):
        headers = {"Authorization": "Bearer " + password, "accept": "json"}
        result = len(user) + len(headers)  # SNAP
        return result  # LOG

    for _ in range(600):
        login("alice", "hunter2-s3cr3t")
        time.sleep(0.05)
""")


def test_production_snapshots_and_logpoints_are_redacted_end_to_end(tmp_path):
    script = tmp_path / "login_target.py"
    script.write_text(TARGET)
    lines = {name: next(n for n, text in enumerate(TARGET.splitlines(), 1) if text.rstrip().endswith(f"# {name}"))
             for name in ("SNAP", "LOG")}
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                                 "--production", str(script)], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env)
    client = None
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"fastattach: listening on (\S+):(\d+)", err_path.read_text())):
            assert time.monotonic() < deadline and proc.poll() is None, err_path.read_text()
            time.sleep(0.05)
        client = DAPClient.connect(match.group(1), int(match.group(2)))
        client.attach(breakpoints={str(script): [
            {"line": lines["SNAP"]}, {"line": lines["LOG"], "logMessage": "user={user} pw={password} h={headers}"}]})
        snapshot = client.wait_event("fastattach.snapshot", 30)["body"]
        logged = client.wait_event("output", 30, lambda e: e["body"]["output"].startswith("user="))["body"]["output"]
        printed = client.wait_event("output", 30, lambda e: "fastattach snapshot:" in e["body"]["output"])
        deadline = time.monotonic() + 30
        while not ("PROBE snapshot" in out_path.read_text() and "PROBE logpoint" in out_path.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, out_path.read_text()
            time.sleep(0.05)
        assert_valid(client.transcript)
    finally:
        if client is not None:
            client.close()
        kill_if_running(proc)
    local = snapshot["frames"][0]["locals"]
    assert local["password"] == "<redacted>" and "'Authorization': <redacted>" in local["headers"]
    assert local["user"] == "'alice'" and snapshot["redacted"] == 2
    assert logged == "user=alice pw=<redacted> h={'Authorization': <redacted>, 'accept': 'json'}\n"
    assert SECRET not in json.dumps(client.transcript) and SECRET not in printed["body"]["output"]
    log = out_path.read_text()
    assert re.search(r"PROBE snapshot redacted=2 snapshot at ", log)
    assert "PROBE logpoint redacted=2 user=alice pw=<redacted> h={'Authorization': <redacted>" in log
    assert SECRET not in log

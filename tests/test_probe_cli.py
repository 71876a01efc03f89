"""`python -m fastattach probe HOST:PORT ...` against a listening process, and the wire under it.

The CLI runs as a subprocess against a real target (`python -m fastattach --listen`) whose
`fastattach.probe` records go to its stdout; the listener-level tests drive the
`fastattachProbes` request with the real DAP client and check every message against the
DAP schema. Deadlines are generous bounds on waits, never measurements.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import dap_schema
import pytest
from _e2e import DebugServer, free_port
from conftest import wait_until

import fastattach.probes as probes
from fastattach import _api
from fastattach.net.client import DAPClient
from fastattach.net.listener import BUSY_MESSAGE, Listener
from fastattach.net.security import FailureThrottle

SECRET = "probe-cli-secret"
SERVICE = textwrap.dedent("""
    import logging, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s pid=%(process)d %(message)s")

    def handle(n):
        reply = n * 2  # PROBE

        return reply  # AFTER-BLANK

    n = 0
    while True:
        handle(n)
        if n % 10 == 0:
            # (a copy: another thread may be importing)
            loaded = sorted(m for m in list(sys.modules) if m.split(".")[0] in ("debugpy", "pydevd", "_pydevd_bundle"))
            print("tick", n, "debugger modules:", loaded, flush=True)
        n += 1
        time.sleep(0.01)
""")


def marker(name: str) -> int:
    return next(n for n, text in enumerate(SERVICE.splitlines(), 1) if text.rstrip().endswith(f"# {name}"))


def probe_cli(*args: str, secret: str | None = SECRET, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "FASTATTACH_SECRET"}
    if secret is not None:
        env["FASTATTACH_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "fastattach", "probe", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def service(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False,
                     env={"FASTATTACH_SECRET": SECRET}) as server:
        server.wait_for_stdout(r"^tick 0 ")
        yield server, script


def address(server) -> str:
    return "{}:{}".format(*server.address)


def ticks(server) -> int:
    return len(re.findall(r"^tick \d+ ", server.stdout(), re.MULTILINE))


def test_add_list_remove_over_the_cli_and_the_probe_outlives_the_cli(service):
    server, script = service
    # GIVEN a listening service and no client
    # WHEN a probe is added by the CLI, which then exits
    added = probe_cli(address(server), "add", f"{script}:{marker('PROBE')}", "--log", "reply for {n}",
                      "--id", "orders", "--expires", "600")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("set probe orders  ") and f"{script}:{marker('PROBE')}" in added.stdout
    # THEN the probe's output reaches the fastattach.probe logger of the target, after the CLI is gone
    server.wait_for_stdout(r"^fastattach\.probe pid=\d+ reply for \d+$")
    listed = probe_cli(address(server), "list", "--json")   # (the connection's options go before or after)
    assert listed.returncode == 0, listed.stderr
    (probe,) = json.loads(listed.stdout)["probes"]
    assert probe["id"] == "orders" and probe["line"] == marker("PROBE") and probe["log"] == "reply for {n}"
    assert probe["expires"] == 600 and 0 < probe["expires_in"] <= 600
    human = probe_cli(address(server), "list")
    assert human.returncode == 0 and human.stdout.startswith("orders  ") and "log 'reply for {n}'" in human.stdout

    # WHEN it is removed
    removed = probe_cli(address(server), "remove", "orders")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "removed probe orders"
    # THEN its output stops (a hit already under way when the answer went out may still print)
    start = ticks(server)
    wait_until(lambda: ticks(server) >= start + 2, what="two more ticks")
    settled = len(server.stdout())
    wait_until(lambda: ticks(server) >= start + 4, what="two more ticks")
    assert "fastattach.probe" not in server.stdout()[settled:]
    assert probe_cli(address(server), "list").stdout.strip() == "no probes"
    # and a process with probes only never imported the debugger
    last_tick = [line for line in server.stdout().splitlines() if line.startswith("tick ")][-1]
    assert last_tick.endswith("debugger modules: []"), last_tick


def test_a_snapshot_probe_with_a_condition(service):
    server, script = service
    added = probe_cli(address(server), "--json", "add", f"{script}:{marker('PROBE')}", "--snapshot",
                      "--condition", "n % 5 == 0", "--id", "snap")
    assert added.returncode == 0, added.stderr
    probe = json.loads(added.stdout)["probe"]
    assert probe["snapshot"] is True and probe["condition"] == "n % 5 == 0" and probe["log"] is None
    server.wait_for_stdout(r"^fastattach\.probe pid=\d+ .*snap")
    assert probe_cli(address(server), "remove", "snap").returncode == 0


def test_probes_are_served_while_a_debugger_client_holds_the_session(service):
    server, script = service
    # GIVEN a real DAP client attached to the service (pydevd started)
    client = DAPClient.connect(*server.address)
    try:
        client.attach(secret=SECRET)
        # WHEN the CLI adds a probe meanwhile
        added = probe_cli(address(server), "add", f"{script}:{marker('PROBE')}", "--log", "beside {n}",
                          "--id", "beside")
        # THEN it is set and logs, the attached client's session goes on, a second debugger is still refused
        assert added.returncode == 0, added.stderr
        server.wait_for_stdout(r"^fastattach\.probe pid=\d+ beside \d+$")
        assert client.request("threads")["success"]
        with DAPClient.connect(*server.address) as second:
            refused = second.request("initialize", {"adapterID": "debugpy"}, check=False)
        assert not refused["success"] and refused["message"] == BUSY_MESSAGE
        assert probe_cli(address(server), "remove", "beside").returncode == 0
        client.disconnect()
    finally:
        client.close()
    dap_schema.assert_valid(client.transcript)


def test_wrong_or_missing_secret_is_refused_and_sets_nothing(service):
    server, script = service
    location = f"{script}:{marker('PROBE')}"
    wrong = probe_cli(address(server), "add", location, "--log", "x", secret="not-the-secret")
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert "refused: wrong secret" in wrong.stderr, wrong.stderr
    missing = probe_cli(address(server), "add", location, "--log", "x", secret=None)
    assert missing.returncode == 1
    # (the lockout after the first failure may answer instead; both are refusals)
    assert "requires a secret" in missing.stderr or "too many failed attempts" in missing.stderr, missing.stderr

    answers = []

    def listed() -> bool:
        answers.append(probe_cli(address(server), "list"))
        return answers[-1].returncode == 0

    wait_until(listed, timeout=60, what="the lockout to end")
    assert answers[-1].stdout.strip() == "no probes"


def test_clear_errors_with_status_1(service):
    server, script = service
    blank = marker("PROBE") + 1
    no_code = probe_cli(address(server), "add", f"{script}:{blank}", "--log", "x")
    assert no_code.returncode == 1
    assert f"line {blank} of" in no_code.stderr and "has no code" in no_code.stderr
    assert f"the next line with code is {marker('AFTER-BLANK')}" in no_code.stderr
    no_file = probe_cli(address(server), "add", "no/such/module.py:3", "--log", "x")
    assert no_file.returncode == 1 and "no such file under any sys.path entry" in no_file.stderr
    bad_template = probe_cli(address(server), "add", f"{script}:{marker('PROBE')}", "--log", "{n")
    assert bad_template.returncode == 1 and "fastattach probe: " in bad_template.stderr
    unknown = probe_cli(address(server), "remove", "nope")
    assert unknown.returncode == 1 and "no probe with id 'nope'" in unknown.stderr
    assert probe_cli(address(server), "list").stdout.strip() == "no probes"


def test_nothing_listening_and_bad_command_lines():
    port = free_port()   # nobody listens on it
    nothing = probe_cli(f"127.0.0.1:{port}", "list")
    assert nothing.returncode == 1
    assert f"nothing is listening on 127.0.0.1:{port}" in nothing.stderr
    for argv, complaint in ((["127.0.0.1:1", "add", "app.py", "--log", "x"], "expected FILE:LINE"),
                            (["127.0.0.1:1", "add", "app.py:3"], "one of the arguments --log --snapshot"),
                            (["127.0.0.1:1", "add", "app.py:3", "--log", "x", "--snapshot"], "not allowed with"),
                            (["5678", "list"], "expected HOST:PORT"),
                            (["127.0.0.1:1", "--cafile", "ca.pem", "list", "--insecure"], "give one of --cafile"),
                            (["127.0.0.1:1"], "required")):
        out = probe_cli(*argv)
        assert out.returncode == 2 and complaint in out.stderr, (argv, out.stderr)


def test_help_names_the_commands():
    out = subprocess.run([sys.executable, "-m", "fastattach", "probe", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    assert "add" in out.stdout and "list" in out.stdout and "remove" in out.stdout and "--secret" in out.stdout
    add = subprocess.run([sys.executable, "-m", "fastattach", "probe", "h:1", "add", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert add.returncode == 0 and "--snapshot" in add.stdout and "--condition" in add.stdout
    main = subprocess.run([sys.executable, "-m", "fastattach", "--help"], capture_output=True, text=True, timeout=60)
    assert "python -m fastattach probe HOST:PORT" in main.stdout


# -- the wire: fastattachProbes on a listener, in this process -----------------------------------

PROBED = textwrap.dedent("""
    def double(n):
        return n * 2  # HERE
""")


@pytest.fixture
def probed(tmp_path):
    path = tmp_path / "probed_module.py"
    path.write_text(PROBED)
    yield str(path), next(n for n, text in enumerate(PROBED.splitlines(), 1) if text.endswith("# HERE"))
    probes.clear()


def make_listener(closing, **kwargs) -> Listener:
    """A listener with the session's probe answers, whose debugger must never be started."""
    opened = []

    def open_backend():
        opened.append(True)
        raise AssertionError("a probe request must not start the debugger")

    made = closing(Listener("127.0.0.1", 0, open_backend=open_backend, secret=SECRET,
                            answer_probe_request=_api.session().answer_probe_request, **kwargs))
    made.opened = opened
    return made


@pytest.fixture
def listener(closing):
    return make_listener(closing)


def test_probe_requests_are_answered_without_the_debugger_or_the_client_slot(listener, probed, closing):
    path, line = probed
    client = closing(DAPClient.connect(*listener.address))
    added = client.request("fastattachProbes", {"command": "add", "file": path, "line": line, "log": "n={n}",
                                                "id": "wire", "secret": SECRET})
    assert added["body"]["probe"]["id"] == "wire"
    listed = client.request("fastattachProbes", {"command": "list", "secret": SECRET})
    assert [probe["id"] for probe in listed["body"]["probes"]] == ["wire"]
    assert not listener.client_connected and listener.opened == []
    # a shape the schema refuses, an unknown command and an unknown field are errors, not crashes
    for arguments, complaint in (({"command": "add", "file": path, "line": "two", "log": "x"},
                                  "arguments.line must be integer"),
                                 ({"command": "explode"}, "unknown probe command 'explode'"),
                                 ({"command": "list", "verbose": True}, "'list' takes no field 'verbose'"),
                                 ({"command": "remove"}, "'remove' needs the id")):
        response = client.request("fastattachProbes", {**arguments, "secret": SECRET}, check=False)
        assert not response["success"] and complaint in response["message"], response
    client.disconnect()
    dap_schema.assert_valid(client.transcript)
    # THEN the probe is the process's: still set after the client left
    assert [probe["id"] for probe in probes.list()] == ["wire"]


def test_a_probe_request_with_a_wrong_secret_is_refused_and_counted(probed, closing):
    path, line = probed
    # (a lockout long enough that the second connection surely meets it)
    listener = make_listener(closing, throttle=FailureThrottle(first_delay=60.0))
    for _ in range(2):   # the throttle forgives a first failure, as it does a mistyped attach
        client = closing(DAPClient.connect(*listener.address))
        response = client.request("fastattachProbes", {"command": "add", "file": path, "line": line, "log": "x",
                                                       "secret": "wrong"}, check=False)
        assert not response["success"] and response["message"].startswith("wrong secret")
        wait_until(lambda refused=client: refused.closed, what="the refused connection to close")
        dap_schema.assert_valid(client.transcript)
    assert probes.list() == [] and listener.opened == []
    # the failures count like failed attaches: the next connection is locked out
    again = closing(DAPClient.connect(*listener.address))
    refused = again.request("initialize", {"adapterID": "debugpy"}, check=False)
    assert not refused["success"] and "too many failed attempts" in refused["message"]


def test_the_cli_speaks_tls_and_checks_the_certificate(probed, closing, tmp_path):
    from test_security import make_certificate

    from fastattach.net.security import server_ssl_context

    path, line = probed
    certfile, keyfile = make_certificate(tmp_path, "debuggee")
    impostor, _ = make_certificate(tmp_path, "impostor")
    listener = make_listener(closing, ssl_context=server_ssl_context(certfile, keyfile))
    where = "{}:{}".format(*listener.address)
    added = probe_cli(where, "--cafile", certfile, "add", f"{path}:{line}", "--log", "tls {n}", "--id", "tls")
    assert added.returncode == 0, added.stderr
    assert [probe["id"] for probe in probes.list()] == ["tls"]
    unverified = probe_cli(where, "--cafile", impostor, "list")
    assert unverified.returncode == 1 and "its TLS certificate did not verify" in unverified.stderr
    plain = probe_cli(where, "--timeout", "5", "list")
    assert plain.returncode == 1 and f"fastattach probe: {where} did not answer" in plain.stderr
    assert "one that serves TLS needs --tls, --cafile or --fingerprint" in plain.stderr

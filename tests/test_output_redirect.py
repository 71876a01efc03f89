"""The program's output as the client sees it, under debugpy 1.8.22 and under fastattach:
with `redirectOutput`, stdout and stderr reach the client as `output` events (non-ASCII
text and tabs included) and still reach the real streams once; without it, the client gets
no program output. Under the command line (`python -m <kind> --listen ...`) and under
fastattach.listen() in the program."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from _e2e import DebugServer, kill_if_running, target
from dap_schema import assert_valid

from fastattach.net.client import DAPClient

PROGRAM = target("adapter_client.py")
# What adapter_client.py prints in its "output" mode once a client is attached.
STDOUT = "STARTED\nhéllo\twörld ✓ 日本\nno newline\t∑\nDONE\n"
STDERR = "err\tñ ✗\n"


def program_output(client: DAPClient) -> dict[str, str]:
    """The client's output events, joined per category (telemetry is never program output)."""
    events = [message["body"] for direction, message, _ in client.transcript
              if direction == "recv" and message.get("type") == "event" and message.get("event") == "output"]
    joined: dict[str, str] = {}
    for body in events:
        category = body.get("category", "console")
        if category != "telemetry":
            joined[category] = joined.get(category, "") + body["output"]
    return joined


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redirect", [True, False])
@pytest.mark.parametrize("kind", ["debugpy", "fastattach"])
def test_redirect_output_under_the_command_line(kind, redirect, tmp_path):
    # GIVEN a program started by `python -m <kind> --listen ... --wait-for-client`
    with DebugServer(kind, PROGRAM, "output", out_dir=tmp_path) as server:
        client = DAPClient.connect(*server.address, timeout=20)
        try:
            # WHEN a client attaches with redirectOutput on or off and the program runs to its end
            client.attach(redirectOutput=redirect)
            client.wait_event("terminated", timeout=30)
            assert server.wait() == 0, server.output()
            client.disconnect()
        finally:
            client.close()
        # THEN with it, the client saw exactly what the program wrote, each stream apart
        expected = {"stdout": STDOUT, "stderr": STDERR} if redirect else {}
        assert program_output(client) == expected
        # and the program's own streams got it once, redirected or not
        assert server.stdout() == STDOUT
        assert server.stderr().endswith(STDERR) and server.stderr().count(STDERR) == 1, server.stderr()
        assert_valid(client.transcript, allow_reordering=kind == "debugpy")


LISTENING_PROGRAM = textwrap.dedent("""
    import sys, fastattach
    print(fastattach.listen(("127.0.0.1", 0))[1], file=sys.stderr, flush=True)
    fastattach.wait_for_client()
    sys.argv = [{program!r}, "output"]
    exec(compile(open({program!r}, encoding="utf-8").read(), {program!r}, "exec"), {{"__name__": "__main__"}})
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redirect", [True, False])
def test_redirect_output_under_listen(redirect, tmp_path):
    # GIVEN a program that calls fastattach.listen() and waits for a client itself
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "w+b") as err:
        proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-c",
                                 LISTENING_PROGRAM.format(program=str(PROGRAM))],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            port = _first_line(err_path, proc)
            client = DAPClient.connect("127.0.0.1", int(port), timeout=20)
            try:
                # WHEN a client attaches with redirectOutput on or off and the program runs to its end
                client.attach(redirectOutput=redirect)
                client.wait_event("terminated", timeout=30)
                assert proc.wait(60) == 0, err_path.read_text()
                client.disconnect()
            finally:
                client.close()
        finally:
            kill_if_running(proc)
    # THEN the client saw what the command line's client sees, and the streams got it once
    expected = {"stdout": STDOUT, "stderr": STDERR} if redirect else {}
    assert program_output(client) == expected
    assert out_path.read_text(encoding="utf-8") == STDOUT
    stderr = err_path.read_text(encoding="utf-8")
    assert stderr.endswith(STDERR) and stderr.count(STDERR) == 1, stderr
    assert_valid(client.transcript)


def _first_line(path, proc, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8", errors="replace")
        if "\n" in text:
            return text.split("\n", 1)[0]
        if proc.poll() is not None:
            raise RuntimeError(f"the program exited with {proc.returncode} before listening:\n{text}")
        time.sleep(0.05)
    raise TimeoutError("the program did not say its port")

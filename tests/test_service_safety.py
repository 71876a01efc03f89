"""A service that keeps fastattach on: breakpoint() without a client, and production mode's
refusal of `terminate`. Each debuggee is a real process behind the CLI, reached over TCP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fastattach.net.client import DAPClient

_LISTENING = re.compile(r"fastattach: listening on (\S+):(\d+)")


class Debuggee:
    """`python -m fastattach --listen 127.0.0.1:0 <flags> script.py`, its output kept in files."""

    def __init__(self, tmp_path: Path, source: str, *flags: str, python_flags=("-Xfrozen_modules=off",),
                 stdin=subprocess.DEVNULL, env=None):
        script = tmp_path / "service.py"
        script.write_text(textwrap.dedent(source))
        self.stdout_path, self.stderr_path = tmp_path / "service.out", tmp_path / "service.err"
        argv = [sys.executable, *python_flags, "-m", "fastattach", "--listen", "127.0.0.1:0", *flags, str(script)]
        if env is None:   # the tests choose the breakpoint hook, not the shell that runs them
            env = {name: value for name, value in os.environ.items() if name != "PYTHONBREAKPOINT"}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=stdin, env=env)
        self.address = self._wait_listening(30.0)

    def _wait_listening(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.stderr())
            if match:
                return match.group(1), int(match.group(2))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.close()
        raise AssertionError("the debuggee never listened:\n" + self.output())

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout()}--- stderr ---\n{self.stderr()}"

    def wait_for_stdout(self, pattern: str, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.stdout(), re.MULTILINE)
            if match:
                return match
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"the debuggee printed nothing matching {pattern!r}:\n{self.output()}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the debuggee did not exit within {timeout} s:\n{self.output()}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def debuggee(tmp_path, closing):
    def start(source: str, *flags: str, **kwargs) -> Debuggee:
        return closing(Debuggee(tmp_path, source, *flags, **kwargs))
    return start


# A service that runs until told to stop by a file, so a killed process shows as not alive.
SERVICE_UNTIL_STOP_FILE = """
    import os, sys, time
    stop_file = sys.argv[0] + ".stop"
    print("serving", flush=True)
    while not os.path.exists(stop_file):
        time.sleep(0.05)
    print("stopped cleanly", flush=True)
"""


def test_production_mode_refuses_terminate_with_a_clear_message(debuggee):
    service = debuggee(SERVICE_UNTIL_STOP_FILE, "--production")
    service.wait_for_stdout("^serving")
    with DAPClient.connect(*service.address) as client:
        client.attach()
        response = client.request("terminate", {}, check=False)
        assert response["success"] is False, "terminate must be refused in production mode"
        assert "production mode" in response["message"] and "terminate" in response["message"]
        # The process survived the request and still answers.
        assert client.request("threads")["body"]["threads"]
        assert service.process.poll() is None, service.output()
        client.disconnect()
    Path(str(service.stdout_path.parent / "service.py") + ".stop").touch()
    assert service.wait(20) == 0, service.output()
    assert "stopped cleanly" in service.stdout()


def test_production_mode_disconnect_does_not_terminate_the_process(debuggee):
    service = debuggee(SERVICE_UNTIL_STOP_FILE, "--production")
    service.wait_for_stdout("^serving")
    with DAPClient.connect(*service.address) as client:
        client.attach()
        response = client.request("disconnect", {"terminateDebuggee": True}, check=False)
        assert response["success"] is True, response
        assert client.wait_event("output", predicate=lambda e: "terminateDebuggee is ignored" in e["body"]["output"])
    # A killed process would have exited by the time a new client gets in.
    with DAPClient.connect(*service.address) as client:
        client.attach()
        assert client.request("threads")["body"]["threads"]
        client.disconnect()
    assert service.process.poll() is None, service.output()
    Path(str(service.stdout_path.parent / "service.py") + ".stop").touch()
    assert service.wait(20) == 0, service.output()


# -- breakpoint() while listening ----------------------------------------------------------

SERVICE_CALLING_BREAKPOINT = """
    import sys
    print("before", flush=True)
    breakpoint()  # BREAK
    print("after breakpoint", flush=True)
"""


@pytest.mark.parametrize("stdin", ["closed", "open"])
@pytest.mark.parametrize("mode", ["debug", "production"])
def test_breakpoint_without_a_client_is_a_no_op_never_pdb(debuggee, stdin, mode):
    """With stdin closed pdb used to kill the caller with BdbQuit; open, it blocked at (Pdb)."""
    flags = ("--production",) if mode == "production" else ()
    service = debuggee(SERVICE_CALLING_BREAKPOINT, *flags,
                       stdin=subprocess.DEVNULL if stdin == "closed" else subprocess.PIPE)
    try:
        assert service.wait(20) == 0, service.output()
    finally:
        if service.process.stdin is not None:
            service.process.stdin.close()
    assert "after breakpoint" in service.stdout(), service.output()
    assert "(Pdb)" not in service.stdout() and "BdbQuit" not in service.stderr(), service.output()


def test_breakpoint_with_a_client_stops_there(debuggee, tmp_path):
    service = debuggee(SERVICE_CALLING_BREAKPOINT, "--wait-for-client")
    with DAPClient.connect(*service.address) as client:
        client.attach()
        stopped = client.wait_stopped(timeout=20)
        frame = client.top_frame(stopped["threadId"])
        source = (tmp_path / "service.py").read_text().splitlines()
        break_line = next(n for n, text in enumerate(source, 1) if text.rstrip().endswith("# BREAK"))
        assert frame["line"] in (break_line, break_line + 1), frame   # at the call, or the line after it
        assert "after breakpoint" not in service.stdout(), "it did not stop"
        client.request("continue", {"threadId": stopped["threadId"]})
        assert service.wait(20) == 0, service.output()
    assert "after breakpoint" in service.stdout()


def test_an_explicit_pythonbreakpoint_is_left_alone(debuggee, tmp_path):
    (tmp_path / "user_hook.py").write_text("def hook(*args, **kwargs):\n    print('user hook ran', flush=True)\n")
    env = dict(os.environ, PYTHONBREAKPOINT="user_hook.hook",
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    service = debuggee(SERVICE_CALLING_BREAKPOINT, env=env)
    assert service.wait(20) == 0, service.output()
    assert "user hook ran" in service.stdout() and "after breakpoint" in service.stdout(), service.output()


def test_stop_restores_the_previous_breakpointhook(monkeypatch):
    import fastattach

    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)

    # An earlier test in this process may have imported pydevd, whose import installs its hook.
    earlier_hook, sys.breakpointhook = sys.breakpointhook, sys.__breakpointhook__
    try:
        fastattach.listen(("127.0.0.1", 0))
        try:
            assert sys.breakpointhook is not sys.__breakpointhook__, "listen() must route breakpoint() to fastattach"
            breakpoint()   # no client: returns at once, no pdb prompt on the test's stdin
        finally:
            fastattach.stop()
        assert sys.breakpointhook is sys.__breakpointhook__
    finally:
        sys.breakpointhook = earlier_hook


# -- pydevd's frozen-modules warning ---------------------------------------------------------

SERVICE_WITH_A_LOG_FILE = """
    import logging, os, sys, time
    logging.basicConfig(filename=sys.argv[0] + ".log", level=logging.INFO)
    stop_file = sys.argv[0] + ".stop"
    print("serving", flush=True)
    while not os.path.exists(stop_file):
        time.sleep(0.05)
"""


def test_frozen_modules_warning_goes_to_the_log_not_to_stderr(debuggee, tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in ("DEBUGPY_LOG_DIR", "PYDEVD_DEBUG")}
    # Without -Xfrozen_modules=off, as a service is usually started.
    service = debuggee(SERVICE_WITH_A_LOG_FILE, python_flags=(), env=env)
    service.wait_for_stdout("^serving")
    with DAPClient.connect(*service.address) as client:
        client.attach()
        assert client.request("threads")["body"]["threads"]
        client.disconnect()
    (tmp_path / "service.py.stop").touch()
    assert service.wait(20) == 0, service.output()
    assert "frozen modules" not in service.stderr(), service.output()
    log_text = (tmp_path / "service.py.log").read_text()
    assert "It seems that frozen modules are being used" in log_text, log_text
    assert "-Xfrozen_modules=off" in log_text


def test_frozen_modules_warning_is_left_to_pydevd_with_verbose_logging(debuggee, tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in ("DEBUGPY_LOG_DIR", "PYDEVD_DEBUG")}
    log_dir = tmp_path / "debugger-logs"
    service = debuggee(SERVICE_WITH_A_LOG_FILE, "--log-to", str(log_dir), python_flags=(), env=env)
    service.wait_for_stdout("^serving")
    with DAPClient.connect(*service.address) as client:
        client.attach()
        client.disconnect()
    (tmp_path / "service.py.stop").touch()
    assert service.wait(20) == 0, service.output()
    printed = service.stderr() + "".join(path.read_text(errors="replace") for path in log_dir.glob("*"))
    assert "It seems that frozen modules are being used" in printed, "verbose logging keeps pydevd's own report"
    assert "frozen modules" not in (tmp_path / "service.py.log").read_text()


def test_breakpoint_with_a_client_in_production_mode_does_not_stop(debuggee):
    service = debuggee(SERVICE_CALLING_BREAKPOINT, "--production", "--wait-for-client")
    with DAPClient.connect(*service.address) as client:
        client.attach()
        assert service.wait(20) == 0, service.output()   # a suspended main thread would not exit
        assert not client.events("stopped")
    assert "after breakpoint" in service.stdout()

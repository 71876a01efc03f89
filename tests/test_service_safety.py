"""A service that keeps fastattach on: breakpoint() without a client, and production mode's
refusal of `terminate`. Each debuggee is a real process behind the CLI, reached over TCP."""

from __future__ import annotations

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

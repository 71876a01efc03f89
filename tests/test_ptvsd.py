"""ptvsd's attach API on fastattach: old code keeps working, under the secure defaults."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import threading

import pytest

from fastattach import _api, _ptvsd
from fastattach.net.client import DAPClient
from fastattach.net.security import InsecureBindError

# Written the way ptvsd 3 code was, with fastattach's module in ptvsd's place.
OLD_CODE = textwrap.dedent("""
    import sys
    from fastattach import _ptvsd as ptvsd

    host, port = ptvsd.enable_attach("s3cret", address=("127.0.0.1", 0))
    print("port", port, flush=True)
    print("attached-before", ptvsd.is_attached(), flush=True)
    print("waited", ptvsd.wait_for_attach(timeout=60), flush=True)
    print("attached", ptvsd.is_attached(), flush=True)
    value = 42
    ptvsd.break_into_debugger()
    print("after-break", value, flush=True)  # BREAK-HERE
    sys.stdin.readline()
    print("attached-after", ptvsd.is_attached(), flush=True)
""")


class Program:
    def __init__(self, path):
        self.process = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-u", str(path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1"))
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(line.split())
        self._lines.put(None)

    def expect(self, key: str, timeout: float = 30) -> str:
        try:
            words = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {key!r} line within {timeout} s") from None
        assert words is not None, f"the program exited: {self.process.stderr.read()}"
        assert words[0] == key, words
        return words[1]

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()


def test_old_ptvsd_code_attaches_and_breaks_in_the_callers_frame(tmp_path):
    path = tmp_path / "old.py"
    path.write_text(OLD_CODE)
    break_line = OLD_CODE.splitlines().index(next(text for text in OLD_CODE.splitlines() if "BREAK-HERE" in text)) + 1
    program = Program(path)
    client = None
    try:
        port = int(program.expect("port"))
        assert program.expect("attached-before") == "False"
        client = DAPClient.connect("127.0.0.1", port)
        client.attach(secret="s3cret")
        assert program.expect("waited") == "True"
        assert program.expect("attached") == "True"
        stopped = client.wait_stopped(timeout=30)
        frame = client.top_frame(stopped["threadId"])
        # the stop is in the caller of break_into_debugger, not inside fastattach
        assert frame["source"]["path"] == str(path)
        assert frame["line"] in (break_line - 1, break_line)
        assert client.evaluate("value", frame["id"]) == "42"
        client.request("continue", {"threadId": stopped["threadId"]})
        assert program.expect("after-break") == "42"
        client.disconnect()
        program.process.stdin.write("\n")
        program.process.stdin.flush()
        assert program.expect("attached-after") == "False"
        assert program.process.wait(30) == 0
    finally:
        if client is not None:
            client.close()
        program.kill()


def test_wrong_secret_is_refused(tmp_path):
    path = tmp_path / "old.py"
    path.write_text(OLD_CODE)
    program = Program(path)
    try:
        port = int(program.expect("port"))
        client = DAPClient.connect("127.0.0.1", port)
        try:
            client.initialize()
            response = client.request("attach", {"secret": "guess"}, check=False)
            assert not response["success"] and "wrong secret" in response["message"]
        finally:
            client.close()
        assert program.process.poll() is None
    finally:
        program.kill()


class TestInProcess:
    @pytest.fixture(autouse=True)
    def stopped_afterwards(self, monkeypatch):
        monkeypatch.delenv("FASTATTACH_SECRET", raising=False)
        yield
        _api.stop()

    def test_public_address_without_secret_needs_the_opt_out(self):
        with pytest.raises(InsecureBindError, match="allow-unauthenticated"):
            _ptvsd.enable_attach(None, address=("0.0.0.0", 0))
        assert not _api.is_client_connected()
        host, port = _ptvsd.enable_attach(None, address=("0.0.0.0", 0), allow_unauthenticated=True)
        assert (host, port > 0) == ("0.0.0.0", True)

    def test_public_address_with_secret_from_the_environment(self, monkeypatch):
        monkeypatch.setenv("FASTATTACH_SECRET", "from-env")
        host, _ = _ptvsd.enable_attach(None, address=("0.0.0.0", 0))
        assert host == "0.0.0.0"

    def test_default_address_is_loopback(self):
        assert _ptvsd.DEFAULT_ADDRESS == ("127.0.0.1", 5678)

    def test_not_attached_means_no_break_and_no_wait(self):
        _ptvsd.enable_attach(None, address=("127.0.0.1", 0))
        assert not _ptvsd.is_attached()
        assert _ptvsd.wait_for_attach(timeout=0.01) is False
        _ptvsd.break_into_debugger()  # no client: returns at once

    def test_break_into_debugger_is_breakpoint(self):
        assert _ptvsd.break_into_debugger is _api.breakpoint

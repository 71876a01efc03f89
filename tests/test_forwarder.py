"""The TLS forwarder (`python -m fastattach connect`) as a real subprocess, in front of a real TLS listener."""

from __future__ import annotations

import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

import dap_schema
import pytest
from _e2e import DebugServer
from conftest import wait_until
from test_security import SECRET, tls_files  # noqa: F401  (a fixture)
from test_server import fake  # noqa: F401  (a fixture)

from fastattach._address import parse_address
from fastattach.net.client import DAPClient
from fastattach.net.listener import Listener
from fastattach.net.security import certificate_fingerprint, server_ssl_context


class ForwarderProcess:
    def __init__(self, *args: str):
        self.process = subprocess.Popen([sys.executable, "-m", "fastattach", "connect", *args],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        # A thread, because select() cannot see lines already in the pipe's Python buffer.
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        try:
            line = self.read_line(r"listening on 127\.0\.0\.1:(\d+)", timeout=30)
        except BaseException:
            self.stop()
            raise
        self.port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def read_line(self, pattern: str, timeout: float = 10) -> str:
        for line in self.stderr_lines:
            if re.search(pattern, line):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.stderr_lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"the forwarder never printed {pattern!r}; stderr: {''.join(self.stderr_lines)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        self.process.stderr.close()


@pytest.fixture
def tls_listener(fake, tls_files):  # noqa: F811
    listener = Listener("127.0.0.1", 0, secret=SECRET, open_backend=fake.open,
                        ssl_context=server_ssl_context(tls_files["cert"], tls_files["key"]))
    yield listener
    listener.close()


@pytest.fixture
def forwarder():
    started = []

    def start(*args):
        process = ForwarderProcess(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def server_arg(listener) -> str:
    return "{}:{}".format(*listener.address)


def fingerprint_of(certfile: str) -> str:
    with open(certfile) as f:
        return certificate_fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))


def attach_through(port: int) -> DAPClient:
    client = DAPClient.connect("127.0.0.1", port)
    client.attach()  # no secret here: the forwarder adds it
    return client


def test_cafile_verifies_and_secret_is_added(tls_listener, forwarder, tls_files, fake):  # noqa: F811
    proxy = forwarder(server_arg(tls_listener), "--cafile", tls_files["cert"], "--secret", SECRET)
    client = attach_through(proxy.port)
    try:
        assert client.request("threads")["success"]
        assert tls_listener.client_connected
        assert fake.opened == 1
        assert "secret" not in fake.received[1]["arguments"]  # the listener strips it before pydevd
        client.disconnect()
    finally:
        client.close()


def test_pinned_fingerprint_and_secret_from_environment(tls_listener, tls_files, fake, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FASTATTACH_SECRET", SECRET)
    proxy = ForwarderProcess(server_arg(tls_listener), "--fingerprint", fingerprint_of(tls_files["cert"]))
    try:
        client = attach_through(proxy.port)
        assert client.request("threads")["success"]
        client.disconnect()
    finally:
        proxy.stop()


@pytest.mark.parametrize("trust, expected", [
    ("cafile", "did not verify"),
    ("fingerprint", "does not match the pinned one"),
])
def test_wrong_certificate_is_refused_with_a_clear_message(tls_listener, forwarder, tls_files, fake,  # noqa: F811
                                                           trust, expected):
    if trust == "cafile":
        args = ["--cafile", tls_files["other_cert"]]
    else:
        args = ["--fingerprint", fingerprint_of(tls_files["other_cert"])]
    proxy = forwarder(server_arg(tls_listener), *args, "--secret", SECRET)
    client = DAPClient.connect("127.0.0.1", proxy.port)
    try:
        response = client.request("initialize", {"adapterID": "debugpy"}, check=False)
        assert not response["success"]
        assert expected in response["message"]
        proxy.read_line(expected)
        wait_until(lambda: client.closed, what="the forwarder to close the local client")
    finally:
        client.close()
    assert fake.opened == 0


def test_insecure_connects_with_a_warning(tls_listener, forwarder, fake):
    proxy = forwarder(server_arg(tls_listener), "--insecure", "--secret", SECRET)
    proxy.read_line("NOT checked")
    client = attach_through(proxy.port)
    try:
        assert client.request("threads")["success"]
    finally:
        client.close()


def test_wrong_secret_through_the_forwarder(tls_listener, forwarder, tls_files, fake):  # noqa: F811
    proxy = forwarder(server_arg(tls_listener), "--cafile", tls_files["cert"], "--secret", "not it")
    client = DAPClient.connect("127.0.0.1", proxy.port)
    try:
        client.initialize()
        response = client.request("attach", {"name": "x"}, check=False)
        assert not response["success"] and "wrong secret" in response["message"]
    finally:
        client.close()
    assert fake.opened == 0


def test_unreachable_server_is_reported(forwarder, tls_files):  # noqa: F811
    import socket
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    proxy = forwarder(f"127.0.0.1:{port}", "--cafile", tls_files["cert"])
    client = DAPClient.connect("127.0.0.1", proxy.port)
    try:
        response = client.request("initialize", {}, check=False)
        assert not response["success"] and f"cannot connect to 127.0.0.1:{port}" in response["message"]
    finally:
        client.close()


def test_non_loopback_listen_is_refused():
    result = subprocess.run([sys.executable, "-m", "fastattach", "connect", "127.0.0.1:1", "--listen", "0.0.0.0:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "only listens on loopback" in result.stderr


def test_bad_arguments_are_clear_errors():
    for args, message in ([["nohost"], "expected HOST:PORT"], [["h:1", "--fingerprint", "zz"], "SHA-256"],
                          [["h:1", "--no-tls", "--insecure"], "--no-tls cannot"]):
        result = subprocess.run([sys.executable, "-m", "fastattach", "connect", *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_parse_address():
    assert parse_address("example.org:5678") == ("example.org", 5678)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("5678", default_host="127.0.0.1") == ("127.0.0.1", 5678)
    with pytest.raises(ValueError):
        parse_address("host:99999")


def test_no_tls_mode_adds_the_secret_for_a_plain_listener(forwarder, fake):
    # e.g. through an SSH tunnel: no TLS to verify, but the editor still knows no secret
    listener = Listener("127.0.0.1", 0, secret=SECRET, open_backend=fake.open)
    try:
        proxy = forwarder(server_arg(listener), "--no-tls", "--secret", SECRET)
        client = attach_through(proxy.port)
        try:
            assert client.request("threads")["success"]
            assert fake.opened == 1
        finally:
            client.close()
    finally:
        listener.close()


def test_attach_that_brings_its_own_secret_is_left_alone(tls_listener, forwarder, tls_files, fake):  # noqa: F811
    proxy = forwarder(server_arg(tls_listener), "--cafile", tls_files["cert"], "--secret", "the forwarder's")
    client = DAPClient.connect("127.0.0.1", proxy.port)
    try:
        client.attach(secret=SECRET)  # the client's own (right) secret wins over the forwarder's
        assert tls_listener.client_connected
    finally:
        client.close()


KILLED_SERVICE = """
import time
while True:
    time.sleep(0.02)
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_debuggee_killed_while_attached_ends_the_editors_session(forwarder, tmp_path, signum):
    script = tmp_path / "service.py"
    script.write_text(KILLED_SERVICE)
    with DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False) as server:
        proxy = forwarder("{}:{}".format(*server.address), "--no-tls")
        client = attach_through(proxy.port)
        try:
            # WHEN the debuggee is killed while the editor is attached through the forwarder
            server.process.send_signal(signum)
            server.process.wait(10)
            # THEN the editor gets `terminated` exactly once (pydevd's own, when it could send
            # one), and after a SIGKILL the forwarder's log says why the connection dropped
            client.wait_event("terminated", timeout=10)
            time.sleep(0.5)
            assert client.events("terminated") == [], "a second terminated"
            if signum == signal.SIGKILL:
                assert "dropped" in proxy.read_line(r"the debuggee's connection dropped \(")
            dap_schema.assert_valid(client.transcript)
        finally:
            client.close()

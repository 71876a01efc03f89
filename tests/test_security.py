"""Secrets, TLS, the bind policy and throttling, through the real listener and real sockets."""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import socket
import ssl
import subprocess

import pytest
from conftest import wait_until
from test_server import clients, fake, make_listener  # noqa: F401  (fixtures)

from fastattach.net.client import DAPClient
from fastattach.net.listener import Listener
from fastattach.net.security import (
    SECRET_ENV_VAR,
    FailureThrottle,
    InsecureBindError,
    certificate_fingerprint,
    check_bind_allowed,
    is_loopback_host,
    normalize_fingerprint,
    resolve_secret,
    secrets_match,
    server_ssl_context,
)
from fastattach.net.wire import encode_message

SECRET = "correct horse battery staple"


def make_certificate(directory, name: str, *, hosts=("127.0.0.1", "localhost")) -> tuple[str, str]:
    """A self-signed certificate (it is its own CA) valid for `hosts`; returns (certfile, keyfile)."""
    if shutil.which("openssl") is None:
        pytest.skip("this machine has no openssl command to make a test certificate")
    certfile, keyfile = str(directory / f"{name}.crt"), str(directory / f"{name}.key")
    san = ",".join(f"IP:{h}" if h[0].isdigit() else f"DNS:{h}" for h in hosts)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", keyfile, "-out", certfile],
        check=True, capture_output=True, timeout=60)
    return certfile, keyfile


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    good = make_certificate(directory, "debuggee")
    other = make_certificate(directory, "impostor")
    return {"cert": good[0], "key": good[1], "other_cert": other[0], "other_key": other[1]}


def attach_request(client, **arguments) -> dict:
    client.initialize()
    return client.request("attach", {"name": "Attach", "request": "attach", **arguments}, check=False)


class TestSecret:
    def test_correct_secret_attaches_and_is_not_forwarded(self, make_listener, clients, fake):
        listener = make_listener(secret=SECRET)
        client = clients(listener)
        client.attach(secret=SECRET)
        assert fake.opened == 1
        attach = next(m for m in fake.received if m["command"] == "attach")
        assert "secret" not in attach["arguments"]
        assert attach["arguments"]["name"] == "Attach"

    @pytest.mark.parametrize("offered, expected", [
        (None, "requires a secret"),
        ("wrong", "wrong secret"),
        ("", "wrong secret"),
        (12345, "wrong secret"),
        (SECRET + " ", "wrong secret"),
    ])
    def test_missing_or_wrong_secret_is_refused_before_pydevd(self, make_listener, clients, fake, caplog,
                                                              offered, expected):
        listener = make_listener(secret=SECRET)
        client = clients(listener)
        arguments = {} if offered is None else {"secret": offered}
        with caplog.at_level(logging.WARNING, logger="fastattach"):
            response = attach_request(client, **arguments)
            wait_until(lambda: client.closed, what="the connection to close")
        assert not response["success"]
        assert expected in response["message"]
        assert fake.opened == 0 and fake.received == []
        assert not listener.client_connected
        assert "secret" in caplog.text

    def test_only_initialize_is_answered_before_attach(self, make_listener, clients, fake):
        listener = make_listener(secret=SECRET)
        client = clients(listener)
        client.initialize()
        for command in ("threads", "evaluate", "setBreakpoints", "configurationDone"):
            response = client.request(command, {"expression": "1"}, check=False)
            assert not response["success"]
            assert "not allowed before 'attach'" in response["message"]
        assert fake.opened == 0
        client.attach(secret=SECRET)  # after initialize once more: refused as a duplicate, yet attach works
        assert fake.opened == 1

    def test_request_before_initialize_is_refused(self, make_listener, clients, fake):
        listener = make_listener(secret=SECRET)
        client = clients(listener)
        response = client.request("attach", {"secret": SECRET}, check=False)
        assert not response["success"] and "send initialize first" in response["message"]
        wait_until(lambda: client.closed, what="the connection to close")
        assert fake.opened == 0

    def test_repeated_failures_lock_the_peer_out(self, make_listener, clients, fake):
        now = [0.0]
        throttle = FailureThrottle(first_delay=100.0, max_delay=400.0, clock=lambda: now[0])
        listener = make_listener(secret=SECRET, throttle=throttle)
        # A loopback peer is counted as the local user that owns its socket.
        me = f"uid {os.getuid()}"
        # GIVEN two wrong guesses (the first one costs nothing, the second a lockout)
        for attempt in (1, 2):
            client = clients(listener)
            assert "wrong secret" in attach_request(client, secret="guess")["message"]
            wait_until(lambda client=client: client.closed, what="the connection to close")
            assert throttle.failures(me) == attempt
        # WHEN the peer tries again during its lockout, even with the right secret
        locked = clients(listener)
        response = locked.request("initialize", {}, check=False)
        # THEN it is refused, with the time to wait, and pydevd is never involved
        assert not response["success"] and "too many failed attempts" in response["message"]
        assert "try again in 100.0 s" in response["message"] and me in response["message"]
        wait_until(lambda: locked.closed, what="the connection to close")
        assert fake.opened == 0
        # and once the lockout is over the right secret works and clears the record
        now[0] += 101
        client = clients(listener)
        client.attach(secret=SECRET)
        assert throttle.failures(me) == 0

    def test_wrong_secret_leaves_an_attached_client_alone(self, make_listener, clients, fake):
        listener = make_listener(secret=SECRET)
        first = clients(listener)
        first.attach(secret=SECRET)
        intruder = clients(listener)
        assert not intruder.request("initialize", {}, check=False)["success"]
        assert first.request("threads")["success"]


def test_throttle_doubles_then_caps_then_forgets():
    now = [0.0]
    throttle = FailureThrottle(first_delay=0.25, max_delay=2.0, forget_after=60, clock=lambda: now[0])
    delays = [throttle.record_failure("10.0.0.1") for _ in range(6)]
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 2.0]
    assert throttle.retry_after("10.0.0.1") == 2.0
    now[0] = 1.5
    assert throttle.retry_after("10.0.0.1") == 0.5
    assert throttle.record_failure("10.0.0.2") == 0.0  # per peer
    assert throttle.retry_after("10.0.0.2") == 0.0
    now[0] = 1000.0
    assert throttle.retry_after("10.0.0.1") == 0.0
    assert throttle.record_failure("10.0.0.1") == 0.0


def test_throttle_table_is_bounded():
    throttle = FailureThrottle(max_peers=10)
    for i in range(1000):
        throttle.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._failures) == 10


def test_secrets_match_is_exact():
    assert secrets_match("s3cret", "s3cret")
    assert not secrets_match("s3cret", "s3cre")
    assert not secrets_match("s3cret", None)
    assert not secrets_match("s3cret", ["s3cret"])
    assert not secrets_match("s3cret", "\udcff")


def test_secret_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(SECRET_ENV_VAR, "from-env")
    assert resolve_secret(None) == "from-env"
    assert resolve_secret("explicit") == "explicit"
    monkeypatch.setenv(SECRET_ENV_VAR, "")
    assert resolve_secret(None) is None
    monkeypatch.delenv(SECRET_ENV_VAR)
    assert resolve_secret(None) is None
    with pytest.raises(ValueError, match="non-empty"):
        resolve_secret("")


class TestBindPolicy:
    def test_public_bind_without_secret_is_refused(self, fake):
        with pytest.raises(InsecureBindError) as error:
            Listener("0.0.0.0", 0, open_backend=fake.open)
        message = str(error.value)
        assert "0.0.0.0:0" in message and SECRET_ENV_VAR in message and "--allow-unauthenticated" in message

    def test_machine_address_without_secret_is_refused(self, fake):
        address = non_loopback_address()
        if address is None:
            pytest.skip("this machine has no non-loopback IPv4 address")
        with pytest.raises(InsecureBindError):
            Listener(address, 0, open_backend=fake.open)

    def test_public_bind_with_secret_is_allowed(self, make_listener, caplog):
        with caplog.at_level(logging.WARNING, logger="fastattach"):
            listener = make_listener("0.0.0.0", secret=SECRET)
        assert listener.address[0] == "0.0.0.0"
        assert "without TLS" in caplog.text

    def test_explicit_opt_out_warns_on_every_start(self, make_listener, caplog):
        with caplog.at_level(logging.WARNING, logger="fastattach"):
            make_listener("0.0.0.0", allow_unauthenticated=True).close()
            make_listener("0.0.0.0", allow_unauthenticated=True)
        assert caplog.text.count("WITHOUT a secret") == 2

    def test_loopback_names(self):
        assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
        assert not is_loopback_host("0.0.0.0") and not is_loopback_host("::")
        check_bind_allowed("127.0.0.5", 1, secret=None, allow_unauthenticated=False)


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # UDP connect sends nothing; it only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


class TestTLS:
    def test_attach_over_tls_with_secret(self, make_listener, clients, tls_files, fake):
        listener = make_listener(secret=SECRET, ssl_context=server_ssl_context(tls_files["cert"], tls_files["key"]))
        context = ssl.create_default_context(cafile=tls_files["cert"])
        client = clients(listener, ssl_context=context)
        client.attach(secret=SECRET)
        assert client.request("threads")["success"]
        assert fake.opened == 1

    def test_certificate_from_another_issuer_is_refused(self, make_listener, tls_files, fake):
        listener = make_listener(ssl_context=server_ssl_context(tls_files["cert"], tls_files["key"]))
        context = ssl.create_default_context(cafile=tls_files["other_cert"])
        with pytest.raises(ssl.SSLCertVerificationError):
            DAPClient.connect(*listener.address, ssl_context=context).close()
        assert fake.opened == 0

    def test_plain_client_on_tls_listener_is_closed_with_a_log_line(self, make_listener, tls_files, fake, caplog):
        listener = make_listener(ssl_context=server_ssl_context(tls_files["cert"], tls_files["key"]))
        with caplog.at_level(logging.WARNING, logger="fastattach"):
            with socket.create_connection(listener.address, timeout=5) as sock:
                sock.sendall(encode_message({"seq": 1, "type": "request", "command": "initialize"}))
                sock.settimeout(5)
                try:
                    while sock.recv(4096):
                        pass
                except OSError:
                    pass
            wait_until(lambda: "TLS handshake" in caplog.text, what="the log line")
        assert fake.opened == 0

    def test_unreadable_certificate_is_a_clear_error(self, tmp_path, tls_files):
        with pytest.raises(ValueError, match="cannot load the TLS certificate"):
            server_ssl_context(str(tmp_path / "missing.crt"), str(tmp_path / "missing.key"))
        with pytest.raises(ValueError, match="cannot load"):
            server_ssl_context(tls_files["cert"], tls_files["other_key"])
        with pytest.raises(ValueError, match="without certfile"):
            server_ssl_context(None, tls_files["key"])

    def test_fingerprint_formats(self, tls_files):
        der = ssl.PEM_cert_to_DER_cert(pathlib.Path(tls_files["cert"]).read_text())
        shown = certificate_fingerprint(der)
        out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", tls_files["cert"]],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        assert shown == out.strip().split("=", 1)[1]
        assert normalize_fingerprint(shown) == normalize_fingerprint("sha256:" + shown.replace(":", "").lower())
        with pytest.raises(ValueError, match="SHA-256"):
            normalize_fingerprint("abcd")


class TestHostileInput:
    """Deterministic cases; tests/test_fuzz.py throws generated ones at the same code."""

    def send_and_collect(self, listener, data: bytes, timeout: float = 5.0) -> bytes:
        with socket.create_connection(listener.address, timeout=timeout) as sock:
            try:
                sock.sendall(data)
            except OSError:
                pass
            received = bytearray()
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except OSError:
                pass
            return bytes(received)

    def test_flood_before_attach_is_cut_off(self, make_listener, fake, caplog):
        listener = make_listener(secret=SECRET)
        flood = b"".join(encode_message({"seq": i, "type": "request", "command": "initialize"})
                         for i in range(1, 20001))
        with caplog.at_level(logging.WARNING, logger="fastattach"):
            received = self.send_and_collect(listener, flood)
            wait_until(lambda: "without an attach" in caplog.text, what="the log line")
        assert received.count(b"Content-Length") <= 16
        assert fake.opened == 0

    @pytest.mark.parametrize("data, log", [
        (b"Content-Length: 100000000\r\n\r\n", "exceeds the limit"),
        (b"Content-Length: -1\r\n\r\n", "not a non-negative integer"),
        (b"Content-Length: 4\r\n\r\n\xff\xfe\xfd\xfc", "not UTF-8"),
        (b"Content-Length: 4\r\n\r\nnope", "not JSON"),
        (b"Content-Length: 2\r\n\r\n[]", "not a JSON object"),
        (b'Content-Length: 40\r\n\r\n{"seq":"1","type":"request","command":1}', "'seq'"),
        (b"\x16\x03\x01\x02\x00" + b"\x00" * 5000, "header block longer"),
    ])
    def test_malformed_frames_close_with_a_log_line(self, make_listener, fake, caplog, data, log):
        listener = make_listener(secret=SECRET)
        with caplog.at_level(logging.WARNING, logger="fastattach"):
            self.send_and_collect(listener, data)
            wait_until(lambda: log in caplog.text, what=f"a log line with {log!r}")
        assert fake.opened == 0
        client = DAPClient.connect(*listener.address)  # still serving
        try:
            client.attach(secret=SECRET)
        finally:
            client.close()

    def test_truncated_body_then_vanish(self, make_listener, fake):
        listener = make_listener(secret=SECRET)
        self.send_and_collect(listener, b"Content-Length: 500\r\n\r\n{\"seq\":1,")
        wait_until(lambda: listener._last_accepted.finished, what="the session to end")
        assert fake.opened == 0

    def test_unknown_and_out_of_order_requests_get_errors(self, make_listener, clients, fake):
        listener = make_listener(secret=SECRET)
        client = clients(listener)
        client.initialize()
        for command in ("frobnicate", "configurationDone", "stackTrace"):
            response = client.request(command, {}, check=False)
            assert not response["success"] and command in response["message"]
        assert client.request("launch", {}, check=False)["message"].startswith("fastattach cannot launch")
        client.attach(secret=SECRET)


class TestCommandLine:
    def run(self, *args, env=None, timeout=60):
        import os
        import sys
        return subprocess.run([sys.executable, "-m", "fastattach", *args], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})

    def test_public_listen_without_secret_fails_at_start(self, monkeypatch):
        monkeypatch.delenv(SECRET_ENV_VAR, raising=False)
        result = self.run("--listen", "0.0.0.0:0", "-c", "print('ran')")
        assert result.returncode == 2
        assert "refusing to listen on 0.0.0.0:0 without a secret" in result.stderr
        assert SECRET_ENV_VAR in result.stderr and "ran" not in result.stdout

    def test_public_listen_with_secret_from_environment_runs(self):
        result = self.run("--listen", "0.0.0.0:0", "-c", "print('ran')", env={SECRET_ENV_VAR: SECRET})
        assert result.returncode == 0, result.stderr
        assert "ran" in result.stdout
        assert "without TLS" in result.stderr

    def test_allow_unauthenticated_warns(self, monkeypatch):
        monkeypatch.delenv(SECRET_ENV_VAR, raising=False)
        result = self.run("--listen", "0.0.0.0:0", "--allow-unauthenticated", "-c", "print('ran')")
        assert result.returncode == 0, result.stderr
        assert "WITHOUT a secret" in result.stderr

    def test_port_in_use_is_a_clear_error(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = self.run("--listen", f"127.0.0.1:{port}", "-c", "print('ran')")
        assert result.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in result.stderr

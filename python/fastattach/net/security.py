"""Who may talk to the debuggee: secrets, TLS contexts, the bind policy and failure throttling.

Every security decision of the listener and the forwarder is made here, so there is one
place to read (and audit) what "secure by default" means.
"""

from __future__ import annotations

import _socket
import os
import threading
import time

from .._log import logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

# ssl (5 MB of OpenSSL), hashlib, hmac and ipaddress are imported where they are used:
# listen() on the default address without TLS must stay cheap for a process that may never
# see a client.

# Addresses that are loopback by their spelling alone (the default among them), decided
# without importing ipaddress.
_LOOPBACK_LITERALS = frozenset({"127.0.0.1", "::1"})

SECRET_ENV_VAR = "FASTATTACH_SECRET"


class InsecureBindError(ValueError):
    """listen() was asked for a reachable address with nothing guarding it."""


def resolve_secret(secret: str | None) -> str | None:
    """The secret to enforce: the argument if given, else $FASTATTACH_SECRET, else None.

    The environment variable is the preferred way: unlike --secret it does not show in `ps`.
    """
    if secret is None:
        secret = os.environ.get(SECRET_ENV_VAR) or None
    elif not isinstance(secret, str) or not secret:
        raise ValueError("secret must be a non-empty string (or None for no secret)")
    return secret


def secrets_match(expected: str, offered: object) -> bool:
    """Constant-time comparison; hashing first hides the expected secret's length too."""
    if not isinstance(offered, str):
        return False
    import hashlib
    import hmac

    return hmac.compare_digest(
        hashlib.sha256(expected.encode("utf-8")).digest(),
        hashlib.sha256(offered.encode("utf-8", "surrogatepass")).digest(),
    )


def resolvable(host: str) -> str | bytes:
    """host as getaddrinfo should get it: an ASCII name as bytes skips the idna codec,
    whose import (unicodedata, stringprep) would cost the debuggee ~1 MB of RSS."""
    return host.encode("ascii") if host.isascii() else host


def is_loopback_host(host: str) -> bool:
    """True only if every address `host` resolves to is a loopback address."""
    if host in _LOOPBACK_LITERALS:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = _socket.getaddrinfo(resolvable(host), None, 0, _socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_bind_allowed(host: str, port: int, *, secret: str | None, allow_unauthenticated: bool) -> None:
    """Refuse a non-loopback address without a secret, unless the user explicitly opted out.

    An open debug port is remote code execution for anyone who can reach it.
    """
    if is_loopback_host(host):
        return
    where = f"{host}:{port}"
    if secret is None:
        if allow_unauthenticated:
            logger.warning(
                "fastattach: listening on %s WITHOUT a secret (allow_unauthenticated): anyone who can "
                "reach this port can run code in this process", where)
            return
        raise InsecureBindError(
            f"refusing to listen on {where} without a secret: anyone who can reach that address could run "
            f"code in this process. Set a secret with the {SECRET_ENV_VAR} environment variable (preferred), "
            f"--secret, or listen(..., secret=...), and clients send it as \"secret\" in their attach "
            f"configuration; add --certfile/--keyfile for TLS. Or listen on 127.0.0.1 and use an SSH tunnel. "
            f"To accept unauthenticated clients anyway, pass --allow-unauthenticated "
            f"(allow_unauthenticated=True).")


def warn_if_plaintext_secret(host: str, port: int, *, secret: str | None, tls: bool) -> None:
    if secret is not None and not tls and not is_loopback_host(host):
        logger.warning(
            "fastattach: listening on %s:%s with a secret but without TLS: the secret and the whole session "
            "cross the network in clear text; add --certfile/--keyfile", host, port)


# -- TLS ---------------------------------------------------------------------------------

def server_ssl_context(certfile: str | None, keyfile: str | None = None) -> ssl.SSLContext | None:
    """The listener's TLS context, or None for plain DAP. Errors name the files involved."""
    if certfile is None:
        if keyfile is not None:
            raise ValueError("keyfile was given without certfile; TLS needs the certificate too")
        return None
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.3 session tickets: they reach the client after the handshake, and a client that
    # reads in one thread while writing in another (most DAP clients, ours included) then has two
    # threads inside one OpenSSL connection at once, which OpenSSL does not support (requests got
    # lost here). Resumption buys nothing for one long debug session anyway.
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot load the TLS certificate {certfile!r}"
                         f"{f' with key {keyfile!r}' if keyfile else ''}: {error}") from None
    return context


def client_ssl_context(*, cafile: str | None = None, fingerprint: str | None = None,
                       insecure: bool = False) -> ssl.SSLContext:
    """The forwarder's TLS context.

    With a cafile, the chain and the host name are verified against it; with a pinned
    fingerprint, the chain is not checked but the certificate must match the pin (see
    check_fingerprint); otherwise the system trust store applies. `insecure` checks nothing.
    """
    import ssl

    if insecure or fingerprint is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def normalize_fingerprint(text: str) -> bytes:
    """SHA-256 fingerprint from hex, with or without colons and an optional 'sha256:' prefix."""
    cleaned = text.strip().lower()
    if cleaned.startswith("sha256:"):
        cleaned = cleaned[len("sha256:"):]
    elif cleaned.startswith("sha256="):
        cleaned = cleaned[len("sha256="):]
    cleaned = cleaned.replace(":", "")
    try:
        digest = bytes.fromhex(cleaned)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"not a SHA-256 fingerprint (64 hex digits, colons allowed): {text!r}")
    return digest


def certificate_fingerprint(der_certificate: bytes) -> str:
    """The colon-separated uppercase SHA-256 form that `openssl x509 -fingerprint -sha256` prints."""
    import hashlib

    return ":".join(f"{b:02X}" for b in hashlib.sha256(der_certificate).digest())


def check_fingerprint(der_certificate: bytes | None, pinned: bytes) -> None:
    import hashlib
    import hmac
    import ssl

    if der_certificate is None:
        raise ssl.SSLError("the server sent no certificate")
    if not hmac.compare_digest(hashlib.sha256(der_certificate).digest(), pinned):
        raise ssl.SSLError(
            f"the server's certificate fingerprint {certificate_fingerprint(der_certificate)} does not match "
            f"the pinned one {':'.join(f'{b:02X}' for b in pinned)}")


# -- failed-authentication throttling ------------------------------------------------------
#
# Two limits, both per listener (docs/security.md, "Guessing the secret"):
# - FailureThrottle locks a *principal* out after its wrong secrets. A principal is whoever
#   the kernel says is on the other end: the local user (uid) for a loopback connection, the
#   address otherwise (an IPv6 /64, which one machine usually holds whole). Rotating through
#   127.0.x.y or a /64 gains nothing, and one local user cannot lock out another.
# - GuessLimiter bounds the secrets checked per second by the whole listener, whoever sends
#   them; when guesses wait for it, the principal with the fewest recent failures goes first,
#   so a client with the right secret is not queued behind a flood of wrong ones.

class FailureThrottle:
    """Locks a principal out for a while after wrong secrets, doubling the time with each recent failure.

    The failing connection itself is answered and closed at once, so it never holds the
    listener's one client slot; the principal's next connections are refused until its
    lockout ends. Keyed by principal (see peer_principal), so reconnecting, or from another
    address, does not reset it. Failures older than `forget_after` seconds are forgotten, and
    the table is bounded so that a flood of source addresses cannot grow the debuggee's memory.
    """

    def __init__(self, *, first_delay: float = 0.25, max_delay: float = 8.0, forget_after: float = 300.0,
                 max_peers: int = 1024, clock=time.monotonic):
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._forget_after = forget_after
        self._max_peers = max_peers
        self._clock = clock
        self._lock = threading.Lock()
        # principal -> (failures, time of the last one, end of the lockout)
        self._failures: dict[str, tuple[int, float, float]] = {}

    def record_failure(self, principal: str) -> float:
        """Counts one failure and returns how long the principal is locked out from now on."""
        now = self._clock()
        with self._lock:
            count, last, _ = self._failures.pop(principal, (0, now, now))
            if now - last > self._forget_after:
                count = 0
            count += 1
            if len(self._failures) >= self._max_peers:
                del self._failures[next(iter(self._failures))]  # oldest entry: dicts keep insertion order
            delay = self.delay_for(count)
            self._failures[principal] = (count, now, now + delay)
        return delay

    def delay_for(self, failures: int) -> float:
        if failures <= 1:
            return 0.0
        return min(self._first_delay * 2 ** (failures - 2), self._max_delay)

    def retry_after(self, principal: str) -> float:
        """Seconds until the principal may try again; 0 when it is not locked out."""
        with self._lock:
            _, _, until = self._failures.get(principal, (0, 0.0, 0.0))
        return max(0.0, until - self._clock())

    def failures(self, principal: str) -> int:
        with self._lock:
            count, last, _ = self._failures.get(principal, (0, 0.0, 0.0))
            return 0 if self._clock() - last > self._forget_after else count

    def record_success(self, principal: str) -> None:
        with self._lock:
            self._failures.pop(principal, None)

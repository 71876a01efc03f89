"""`python -m fastattach connect HOST:PORT`: a loopback DAP port for clients that cannot speak TLS.

The editor connects to the forwarder in plain DAP on 127.0.0.1; the forwarder opens a
TLS connection to the debuggee, checks its certificate (against a CA file, the system
trust store, or a pinned SHA-256 fingerprint), adds the secret to the client's `attach`,
and copies everything else unchanged. It runs on the developer's machine, never in the
debuggee.
"""

from __future__ import annotations

import argparse
import logging
import selectors
import socket
import ssl
import sys
import threading

from .._address import DEFAULT_HOST, parse_address
from .relay import refuse_connection
from .security import (
    SECRET_ENV_VAR,
    check_fingerprint,
    client_ssl_context,
    is_loopback_host,
    normalize_fingerprint,
    resolve_secret,
)
from .sockets import close_quietly, would_block
from .wire import FrameDecoder, ProtocolError, decode_message, encode_message, frame

logger = logging.getLogger("fastattach.connect")

CONNECT_TIMEOUT = 10.0
# Bytes waiting for one side before the forwarder stops reading the other.
MAX_PENDING_BYTES = 32 * 1024 * 1024
# How long a local client whose server could not be reached gets to send the request we answer with the reason.
FIRST_REQUEST_TIMEOUT = 10.0


class Forwarder:
    """Listens on loopback and, for each local client, opens a verified TLS connection upstream."""

    def __init__(self, listen: tuple[str, int], server: tuple[str, int], *, ssl_context: ssl.SSLContext | None,
                 fingerprint: bytes | None = None, secret: str | None = None, server_hostname: str | None = None):
        if not is_loopback_host(listen[0]):
            raise ValueError(
                f"the forwarder only listens on loopback (got {listen[0]!r}): its local side is plain DAP with "
                f"no authentication, and it adds the secret for whoever connects")
        self._server = server
        self._ssl_context = ssl_context
        self._fingerprint = fingerprint
        self._secret = secret
        self._server_hostname = server_hostname or server[0]
        self._sock = socket.create_server(listen, family=socket.AF_INET6 if ":" in listen[0] else socket.AF_INET)
        self.address = self._sock.getsockname()[:2]
        self._closed = threading.Event()

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                local, peer = self._sock.accept()
            except OSError:
                if self._closed.is_set():
                    return
                raise
            local.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve_client, args=(local,), name="fastattach.connect", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    # -- one local client ------------------------------------------------------------------
    def _serve_client(self, local: socket.socket) -> None:
        where = f"{self._server[0]}:{self._server[1]}"
        try:
            upstream = self._open_upstream()
        except (OSError, ssl.SSLError) as error:
            reason = _describe_failure(where, error)
            logger.error("fastattach connect: %s", reason)
            refuse_connection(local, f"fastattach connect: {reason}", FIRST_REQUEST_TIMEOUT)
            return
        logger.info("fastattach connect: local client connected; forwarding to %s", where)
        try:
            self._relay(local, upstream)
        except Exception:
            logger.exception("fastattach connect: the session with %s failed", where)
        finally:
            close_quietly(local)
            close_quietly(upstream)
            logger.info("fastattach connect: session with %s ended", where)

    def _open_upstream(self) -> socket.socket:
        raw = socket.create_connection(self._server, timeout=CONNECT_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl_context is None:
            raw.settimeout(None)
            return raw
        try:
            tls = self._ssl_context.wrap_socket(
                raw, server_hostname=self._server_hostname if self._ssl_context.check_hostname else None)
            if self._fingerprint is not None:
                check_fingerprint(tls.getpeercert(binary_form=True), self._fingerprint)
        except BaseException:
            raw.close()
            raise
        tls.settimeout(None)
        return tls

    def _relay(self, local: socket.socket, upstream: socket.socket) -> None:
        """Copies both ways in one thread: an SSL connection must never be inside two threads at once."""
        decoder = FrameDecoder()
        server_stream = _ServerStream()
        to_upstream, to_local = bytearray(), bytearray()
        local.setblocking(False)
        upstream.setblocking(False)
        local_open = upstream_open = True
        with selectors.DefaultSelector() as selector:
            selector.register(local, selectors.EVENT_READ, "local")
            selector.register(upstream, selectors.EVENT_READ, "upstream")
            while (local_open and upstream_open) or (to_local and local_open) or (to_upstream and upstream_open):
                # Each side is read only while the other side keeps up, so neither buffer grows without bound.
                both_open = local_open and upstream_open
                reading = {local: both_open and len(to_upstream) < MAX_PENDING_BYTES,
                           upstream: both_open and len(to_local) < MAX_PENDING_BYTES}
                for sock, pending, tag in ((local, to_local, "local"), (upstream, to_upstream, "upstream")):
                    events = (selectors.EVENT_READ if reading[sock] else 0) | (
                        selectors.EVENT_WRITE if pending else 0)
                    registered = selector.get_map().get(sock)
                    if registered is not None and registered.events != events:
                        selector.unregister(sock)
                        registered = None
                    if registered is None and events:
                        selector.register(sock, events, tag)
                # Decrypted bytes already inside OpenSSL are invisible to select().
                buffered = reading[upstream] and isinstance(upstream, ssl.SSLSocket) and upstream.pending()
                ready = selector.select(0 if buffered else CONNECT_TIMEOUT * 6)
                if buffered:
                    ready.append((selector.get_key(upstream), selectors.EVENT_READ))
                for key, mask in ready:
                    sock = key.fileobj
                    if mask & selectors.EVENT_WRITE:
                        pending = to_local if sock is local else to_upstream
                        if not _send_some(sock, pending):
                            local_open = upstream_open = False
                    if mask & selectors.EVENT_READ and reading[sock]:
                        data, why = _recv_some(sock)
                        if data is None:
                            continue
                        if not data:
                            if sock is local:
                                local_open = False
                            else:
                                upstream_open = False
                                to_local += server_stream.dropped(why)
                            continue
                        if sock is upstream:
                            server_stream.feed(data)
                            to_local += data
                            continue
                        try:
                            bodies = decoder.feed(data)
                        except ProtocolError as error:
                            logger.error("fastattach connect: the local client sent malformed DAP (%s); closing",
                                         error)
                            return
                        for body in bodies:
                            to_upstream += self._with_secret(body)

    def _with_secret(self, body: bytes) -> bytes:
        """The message framed for the server, with our secret added to an attach that has none."""
        if self._secret is not None:
            try:
                message = decode_message(body)
            except ProtocolError:
                message = None
            if message and message["type"] == "request" and message["command"] == "attach":
                arguments = dict(message.get("arguments") or {})
                arguments.setdefault("secret", self._secret)
                message["arguments"] = arguments
                return encode_message(message)
        return frame(body)


_WOULD_BLOCK = would_block(tls=True)


class _ServerStream:
    """Follows the debuggee's messages (copied unchanged) to tell the editor when it vanishes.

    A debuggee killed outright (SIGKILL, the OOM killer, a crash) cannot say goodbye; debugpy's
    adapter, a process of its own, then still sends `terminated`. So do we, once, when the
    debuggee's connection drops after an attach without pydevd's `terminated`; and we log why."""

    def __init__(self):
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self._last_seq = 0
        self._attached = False
        self._terminated = False
        self._following = True

    def feed(self, data: bytes) -> None:
        if not self._following:
            return
        try:
            for body in self._decoder.feed(data):
                message = decode_message(body)
                self._last_seq = message["seq"]
                if message["type"] == "event" and message["event"] == "terminated":
                    self._terminated = True
                elif message["type"] == "response" and message["command"] == "attach" and message.get("success"):
                    self._attached = True
        except ProtocolError as error:
            logger.warning("fastattach connect: cannot follow the debuggee's messages (%s)", error)
            self._following = False

    def dropped(self, why: str) -> bytes:
        """What the editor is sent when the debuggee's connection ends."""
        if self._terminated or not self._attached:
            logger.info("fastattach connect: the debuggee closed the connection (%s)", why)
            return b""
        logger.warning("fastattach connect: the debuggee's connection dropped (%s) before the session ended: the "
                       "process was probably killed; telling the editor the session is over", why)
        self._terminated = True
        if not self._following:
            return b""
        return encode_message({"seq": self._last_seq + 1, "type": "event", "event": "terminated", "body": {}})


def _recv_some(sock: socket.socket) -> tuple[bytes | None, str]:
    """(bytes read, ""), (b"", why) at the end of the stream, (None, "") when nothing is ready yet."""
    try:
        data = sock.recv(65536)
    except _WOULD_BLOCK:
        return None, ""
    except OSError as error:
        return b"", f"connection lost: {error.strerror or error}"
    return data, "" if data else "end of stream"


def _send_some(sock: socket.socket, pending: bytearray) -> bool:
    """Sends what the socket takes now; False if the connection is gone."""
    try:
        sent = sock.send(pending[:65536])
    except _WOULD_BLOCK:
        return True
    except OSError:
        return False
    del pending[:sent]
    return True


def _describe_failure(where: str, error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"refusing {where}: its TLS certificate did not verify ({error.verify_message}). Pass the "
                f"server's certificate or CA with --cafile, pin it with --fingerprint, or (unsafe) --insecure")
    if isinstance(error, ssl.SSLError) and "fingerprint" in str(error):
        return f"refusing {where}: {error.args[0] if error.args else error}"
    if isinstance(error, ssl.SSLError):
        return f"TLS with {where} failed ({error}); is the debuggee listening with --certfile/--keyfile?"
    return f"cannot connect to {where}: {error.strerror or error}"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastattach connect",
        description="Forward a local plain-DAP port to a fastattach debuggee that serves TLS, verifying its "
                    "certificate and adding the secret. Point the editor's attach configuration at --listen.")
    parser.add_argument("server", metavar="HOST:PORT", help="the debuggee's TLS listener")
    parser.add_argument("--listen", metavar="[HOST:]PORT", default=f"{DEFAULT_HOST}:0",
                        help=f"local address for the editor (loopback only; default {DEFAULT_HOST} and a free port)")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--cafile", help="verify the server's certificate against this CA (or self-signed) file")
    trust.add_argument("--fingerprint", metavar="SHA256",
                       help="accept only the certificate with this SHA-256 fingerprint "
                            "(openssl x509 -noout -fingerprint -sha256 -in cert.pem)")
    trust.add_argument("--insecure", action="store_true",
                       help="accept any certificate: encrypted, but open to a man in the middle")
    parser.add_argument("--server-name", help="the name to verify in the certificate (default: HOST)")
    parser.add_argument("--secret", help=f"the debuggee's secret (prefer the {SECRET_ENV_VAR} environment "
                                         f"variable: arguments show in ps)")
    parser.add_argument("--no-tls", action="store_true",
                        help="connect in plain DAP (only to add the secret, e.g. through an SSH tunnel)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        server = parse_address(args.server, default_host=None)
        listen = parse_address(args.listen)
        fingerprint = normalize_fingerprint(args.fingerprint) if args.fingerprint else None
        secret = resolve_secret(args.secret)
        if args.no_tls and (args.cafile or args.fingerprint or args.insecure):
            raise ValueError("--no-tls cannot be combined with --cafile, --fingerprint or --insecure")
        context = None if args.no_tls else client_ssl_context(
            cafile=args.cafile, fingerprint=fingerprint, insecure=args.insecure)
        forwarder = Forwarder(listen, server, ssl_context=context, fingerprint=fingerprint, secret=secret,
                              server_hostname=args.server_name)
    except (ValueError, OSError, ssl.SSLError) as error:
        parser.exit(2, f"fastattach connect: error: {error}\n")
    if args.insecure:
        logger.warning("fastattach connect: --insecure: the server's certificate is NOT checked")
    if secret is None:
        logger.warning("fastattach connect: no secret given (--secret or %s); attach requests go out as they are",
                       SECRET_ENV_VAR)
    host, port = forwarder.address
    print(f"fastattach connect: listening on {host}:{port}, forwarding to {server[0]}:{server[1]}"
          f"{'' if context is None else ' over TLS'}", file=sys.stderr, flush=True)
    try:
        forwarder.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        forwarder.close()
    return 0


__all__ = ["Forwarder", "main"]

if __name__ == "__main__":  # pragma: no cover - the CLI entry is `python -m fastattach connect`
    sys.exit(main())

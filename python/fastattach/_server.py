"""Our listening socket and the relay between one DAP client and pydevd.

The listener costs one idle thread until a client connects. The client's handshake is
answered here (see _handshake.py); only after an accepted `attach` is pydevd started
(through `open_backend`, by default _pydevd_host.open_session) and the client's
initialize and attach replayed to it. From then on one relay thread copies messages both
ways, renumbering what the client receives so that our own messages (the initialize
response, injected events) and pydevd's form one sequence.

Nothing here may raise into, block or crash the debuggee: every failure ends the client's
session with a log line on logging.getLogger("fastattach").
"""

from __future__ import annotations

import collections
import errno
import logging
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import ssl

from ._dap import (DEFAULT_MAX_BODY_BYTES, FrameDecoder, ProtocolError, decode_message, encode_message,
                   error_response)
from ._handshake import MAX_BODY_BYTES_BEFORE_ATTACH, Handshake
from ._security import FailureThrottle, check_bind_allowed, warn_if_plaintext_secret

logger = logging.getLogger("fastattach")

DEFAULT_HOST = "127.0.0.1"
# From TCP accept to an accepted attach, TLS handshake included.
DEFAULT_AUTH_TIMEOUT = 20.0
# pydevd's answers (variables of a large object, a long stack) can be far bigger than requests.
MAX_BACKEND_BODY_BYTES = 64 * 1024 * 1024
# Stop reading the client while this much waits for pydevd: a flood then stays in the kernel.
MAX_PENDING_TO_BACKEND = 8 * 1024 * 1024
# A client that reads nothing while pydevd keeps talking is dropped rather than buffered for.
MAX_PENDING_TO_CLIENT = 32 * 1024 * 1024
# Events injected with send_event() while the relay is busy.
MAX_INJECTED_EVENTS = 10_000
# How long pydevd gets to answer the disconnect we send it when a client vanishes.
BACKEND_DISCONNECT_TIMEOUT = 5.0
# How long a closing connection gets to take our last messages.
FLUSH_TIMEOUT = 2.0
# Second clients being told "busy" at once; more are just closed.
MAX_CONCURRENT_REJECTIONS = 4
# How long a refused connection gets to send the request we answer with the reason.
REFUSAL_TIMEOUT = 5.0
BUSY_MESSAGE = ("another debugger client is already attached to this process; fastattach serves one client "
                "at a time: disconnect the other one first")

# What a non-blocking plain socket raises when it has nothing for us; a TLS session adds ssl's
# two (ssl itself is only imported by whoever made the context: see _tls_would_block).
_WOULD_BLOCK = (BlockingIOError, InterruptedError)


def _tls_would_block() -> tuple[type[BaseException], ...]:
    import ssl

    return _WOULD_BLOCK + (ssl.SSLWantReadError, ssl.SSLWantWriteError)


# Production mode's hook (fastattach._production.filter_request), set by configure():
# REQUEST_FILTER(request) -> None (forward unchanged) | str (refuse with this message)
# | dict (forward this rewritten request instead).  Kept apart from the relay's logic.
REQUEST_FILTER: Callable[[dict], object] | None = None


class ListenError(OSError):
    """The listening socket could not be opened; the message names host:port and the cause."""


def _open_pydevd_session() -> socket.socket:
    from . import _pydevd_host  # imports debugpy: only once a client has authenticated
    return _pydevd_host.open_session()


def _start_thread(target: Callable, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    # pydevd skips threads carrying these marks: our relay must never stop at a breakpoint.
    thread.pydev_do_not_trace = True
    thread.is_pydev_daemon_thread = True
    thread.start()
    return thread


def _format_peer(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _close_quietly(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def refuse_connection(conn: socket.socket, reason: str, timeout: float | None = None) -> None:
    """Answers the first request on `conn` with an error response saying `reason`, then closes it.

    A DAP client shows the message of a failed response to its user; a bare close would
    leave them guessing. Waits at most `timeout` seconds for that first request.
    """
    timeout = REFUSAL_TIMEOUT if timeout is None else timeout
    try:
        deadline = time.monotonic() + timeout
        decoder = FrameDecoder(MAX_BODY_BYTES_BEFORE_ATTACH)
        while (remaining := deadline - time.monotonic()) > 0:
            conn.settimeout(remaining)
            data = conn.recv(65536)
            if not data:
                return
            bodies = decoder.feed(data)
            if bodies:
                request = decode_message(bodies[0])
                if request["type"] == "request":
                    conn.sendall(encode_message(error_response(request, 1, reason)))
                return
    except (OSError, ProtocolError):
        pass
    finally:
        _close_quietly(conn)


class _Waker:
    """Wakes a thread blocked in select() from another thread (a socketpair, so it works everywhere)."""

    def __init__(self):
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def wake(self) -> None:
        try:
            self._writer.send(b"x")
        except OSError:
            pass  # already full (a wake-up is pending anyway) or closed

    def drain(self) -> None:
        try:
            while self.reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


class Listener:
    """Listens for DAP clients on (host, port) and relays one at a time to pydevd."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0, *, secret: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, allow_unauthenticated: bool = False,
                 open_backend: Callable[[], socket.socket] = _open_pydevd_session,
                 auth_timeout: float = DEFAULT_AUTH_TIMEOUT, throttle: FailureThrottle | None = None):
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ValueError("secret must be a non-empty string (or None for no secret)")
        check_bind_allowed(host, port, secret=secret, allow_unauthenticated=allow_unauthenticated)
        warn_if_plaintext_secret(host, port, secret=secret, tls=ssl_context is not None)
        self._secret = secret
        self._ssl_context = ssl_context
        self._open_backend = open_backend
        self._auth_timeout = auth_timeout
        self._throttle = throttle or FailureThrottle()
        self._sock = self._bind(host, port)
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._session: _ClientSession | None = None
        self._session_thread: threading.Thread | None = None
        self._configured = threading.Event()
        self._rejections = 0
        self._waker = _Waker()
        self._accept_thread = _start_thread(self._accept_loop, "fastattach.listener")
        logger.info("fastattach: listening on %s:%s%s%s", *self.address,
                    " (TLS)" if ssl_context else "", " (secret required)" if secret else "")

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        where = f"{host}:{port}"
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as error:
            raise ListenError(error.errno or errno.EINVAL, f"cannot listen on {where}: cannot resolve {host!r}: "
                                                         f"{error.strerror or error}") from None
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # Lets a restarted debuggee reuse its port at once; Linux still refuses a port in active use.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(8)
        except OSError as error:
            sock.close()
            if error.errno == errno.EADDRINUSE:
                reason = "the address is already in use (another process or another listen() holds that port)"
            elif error.errno == errno.EADDRNOTAVAIL:
                reason = "that address does not belong to this machine"
            elif error.errno == errno.EACCES:
                reason = "permission denied (ports below 1024 need privileges)"
            else:
                reason = error.strerror or str(error)
            raise ListenError(error.errno, f"cannot listen on {where}: {reason}") from None
        return sock

    # -- what the rest of the package uses ----------------------------------------------
    @property
    def client_connected(self) -> bool:
        """A client has been accepted (attach with the right secret) and is still connected."""
        session = self._session
        return session is not None and session.active

    def wait_configured(self, timeout: float | None = None) -> bool:
        """Waits until a client's configurationDone got a successful response."""
        return self._configured.wait(timeout)

    def send_event(self, event: str, body: dict | None = None) -> None:
        """Injects an event into the attached client's stream; thread-safe, a no-op without a client."""
        session = self._session
        if session is not None and session.active:
            session.inject_event(event, body)

    def close(self, timeout: float = 5.0) -> None:
        """Disconnects the client (pydevd gets a disconnect, so threads resume), stops listening."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._waker.wake()
        with self._lock:
            session, thread = self._session, self._session_thread
        if session is not None:
            session.stop()
        for worker in (self._accept_thread, thread):
            # close() may come from code the client evaluates; never wait for ourselves.
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout)
        _close_quietly(self._sock)
        self._waker.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- accepting -----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._waker.reader, selectors.EVENT_READ)
            while not self._closed.is_set():
                ready = selector.select()
                if self._closed.is_set():
                    break
                if any(key.fileobj is self._sock for key, _ in ready):
                    self._accept_one()
                else:
                    self._waker.drain()
        except Exception:
            logger.exception("fastattach: the listener failed; no more clients will be accepted")
        finally:
            selector.close()

    def _accept_one(self) -> None:
        try:
            conn, peer = self._sock.accept()
        except _WOULD_BLOCK:
            return
        except OSError as error:
            # Out of file descriptors, typically: back off instead of spinning on the ready socket.
            logger.warning("fastattach: accept() failed: %s", error)
            self._closed.wait(0.1)
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer_host = peer[0] if isinstance(peer, tuple) else str(peer)
        wait = self._throttle.retry_after(peer_host)
        if wait:
            refusal = (f"too many failed attempts from {peer_host}: try again in {wait:.1f} s, "
                       f"with the right secret")
        elif self._admit(conn, peer):
            return
        else:
            refusal = None
        with self._lock:
            if self._rejections >= MAX_CONCURRENT_REJECTIONS:
                logger.warning("fastattach: closed a connection from %s: a client is already attached",
                               _format_peer(peer))
                _close_quietly(conn)
                return
            self._rejections += 1
        if refusal is not None:
            _start_thread(lambda: self._reject(conn, peer, refusal), "fastattach.reject")
        else:
            _start_thread(lambda: self._admit_later_or_reject(conn, peer), "fastattach.reject")

    def _admit(self, conn: socket.socket, peer) -> bool:
        """Starts a session for this connection unless another one is still running."""
        with self._lock:
            if self._closed.is_set() or (self._session is not None and not self._session.finished):
                return False
            self._configured.clear()
            self._session = _ClientSession(self, conn, peer)
            self._session_thread = _start_thread(self._session.run, "fastattach.relay")
            return True

    def _admit_later_or_reject(self, conn: socket.socket, peer) -> None:
        # A client that reconnects right after its disconnect response can arrive while
        # the old session is still detaching: wait for that instead of calling it busy.
        session = self._session
        if session is not None and session.leaving:
            session.done.wait(FLUSH_TIMEOUT + BACKEND_DISCONNECT_TIMEOUT)
            if self._admit(conn, peer):
                with self._lock:
                    self._rejections -= 1
                return
        self._reject(conn, peer, BUSY_MESSAGE)

    def _reject(self, conn: socket.socket, peer, reason: str) -> None:
        """Answers the connection's first request with `reason`, without touching the current session."""
        try:
            if self._ssl_context is not None:
                conn.settimeout(REFUSAL_TIMEOUT)
                conn = self._ssl_context.wrap_socket(conn, server_side=True)
            refuse_connection(conn, reason)
            logger.warning("fastattach: refused a connection from %s: %s", _format_peer(peer), reason)
        except (OSError, ValueError) as error:
            logger.warning("fastattach: refused a connection from %s: %s (%s)", _format_peer(peer), reason, error)
            _close_quietly(conn)
        except Exception:
            logger.exception("fastattach: error while refusing a connection")
            _close_quietly(conn)
        finally:
            with self._lock:
                self._rejections -= 1

    def _session_ending(self, session: _ClientSession) -> None:
        with self._lock:
            if session is self._session:
                self._configured.clear()


class _ClientSession:
    """One client connection, served by one thread from accept to close."""

    def __init__(self, listener: Listener, conn: socket.socket, peer):
        self._listener = listener
        self._client = conn
        self._peer = peer
        self._peer_name = _format_peer(peer)
        self._peer_host = peer[0] if isinstance(peer, tuple) else str(peer)
        self._backend: socket.socket | None = None
        self._tls = listener._ssl_context is not None
        self._would_block = _tls_would_block() if self._tls else _WOULD_BLOCK
        self._handshake = Handshake(listener._secret)
        self._client_decoder = FrameDecoder(MAX_BODY_BYTES_BEFORE_ATTACH)
        self._backend_decoder = FrameDecoder(MAX_BACKEND_BODY_BYTES)
        self._to_client = bytearray()
        self._to_backend = bytearray()
        self._seq = 0
        self._last_client_seq = 0
        # The client's initialize request: pydevd's answer to our replay of it is swallowed.
        self._replayed_initialize_seq: int | None = None
        self._client_disconnect_seq: int | None = None
        self._backend_disconnected = False
        self._injected: collections.deque = collections.deque()
        self._injected_lock = threading.Lock()
        self._dropped_events = 0
        self._waker = _Waker()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + listener._auth_timeout
        self._ending: str | None = None  # why the session is ending: flush, then close
        self.attached = False
        self.finished = False
        self.done = threading.Event()

    @property
    def leaving(self) -> bool:
        """Ending or already over: a new client will not have to wait long."""
        return self._ending is not None or self.finished

    @property
    def active(self) -> bool:
        """Attached and not on its way out."""
        return self.attached and self._ending is None and not self.finished

    # -- called from other threads ----------------------------------------------------------
    def inject_event(self, event: str, body: dict | None) -> None:
        with self._injected_lock:
            if len(self._injected) >= MAX_INJECTED_EVENTS:
                self._dropped_events += 1
                return
            message = {"type": "event", "event": event}
            if body is not None:
                message["body"] = body
            self._injected.append(message)
        self._waker.wake()

    def stop(self) -> None:
        self._stop.set()
        self._waker.wake()

    # -- the relay thread --------------------------------------------------------------------
    def run(self) -> None:
        try:
            logger.info("fastattach: client connected from %s", self._peer_name)
            if self._listener._ssl_context is not None and not self._tls_handshake():
                return
            self._client.setblocking(False)
            self._relay()
        except Exception:
            logger.exception("fastattach: the relay for %s failed; closing that connection", self._peer_name)
        finally:
            self._teardown()

    def _tls_handshake(self) -> bool:
        try:
            self._client.settimeout(max(0.1, self._deadline - time.monotonic()))
            self._client = self._listener._ssl_context.wrap_socket(self._client, server_side=True)
            return True
        except (OSError, ValueError) as error:
            logger.warning("fastattach: TLS handshake with %s failed: %s", self._peer_name, error)
            return False

    def _relay(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._client, selectors.EVENT_READ, "client")
            selector.register(self._waker.reader, selectors.EVENT_READ, "wake")
            if self._tls:
                # Bytes that came in with the handshake may already sit in OpenSSL's buffer, where
                # select() cannot see them; every later read drains until SSLWantReadError.
                self._read_client()
            while True:
                if self._stop.is_set() and self._ending is None:
                    self._end("the listener is closing")
                self._drain_injected()
                if self._ending is not None and not self._to_client:
                    return
                now = time.monotonic()
                if now >= self._deadline:
                    if self._ending is not None:
                        return  # the client did not take our last messages in time
                    self._end(f"no attach within {self._listener._auth_timeout:g} s", warn=True)
                    continue
                self._update_interest(selector)
                timeout = self._deadline - now if not self.attached or self._ending else None
                # An SSL socket may hold decrypted bytes that select() cannot see.
                if self._can_read_client() and self._tls and self._client.pending():
                    timeout = 0
                for key, mask in selector.select(timeout):
                    if key.data == "wake":
                        self._waker.drain()
                    elif key.data == "client":
                        if mask & selectors.EVENT_WRITE:
                            self._flush(self._client, self._to_client)
                        if mask & selectors.EVENT_READ:
                            self._read_client()
                    elif key.data == "backend":
                        if mask & selectors.EVENT_WRITE:
                            self._flush(self._backend, self._to_backend)
                        if mask & selectors.EVENT_READ:
                            self._read_backend()
                if self._tls and self._can_read_client() and self._client.pending():
                    self._read_client()
        finally:
            selector.close()

    def _can_read_client(self) -> bool:
        return self._ending is None and len(self._to_backend) < MAX_PENDING_TO_BACKEND

    def _update_interest(self, selector: selectors.BaseSelector) -> None:
        client_events = (selectors.EVENT_READ if self._can_read_client() else 0) | (
            selectors.EVENT_WRITE if self._to_client else 0)
        self._set_interest(selector, self._client, client_events, "client")
        if self._backend is not None:
            backend_events = (0 if self._backend_disconnected else selectors.EVENT_READ) | (
                selectors.EVENT_WRITE if self._to_backend else 0)
            self._set_interest(selector, self._backend, backend_events, "backend")

    @staticmethod
    def _set_interest(selector, sock, events, tag) -> None:
        try:
            key = selector.get_key(sock)
        except KeyError:
            if events:
                selector.register(sock, events, tag)
            return
        if not events:
            selector.unregister(sock)
        elif key.events != events:
            selector.modify(sock, events, tag)

    def _end(self, reason: str, *, warn: bool = False) -> None:
        """Stops reading; the relay loop ends once our last messages reach the client."""
        if self._ending is None:
            self._ending = reason
            # From here on the client counts as gone, before it even reads our last message.
            self._listener._session_ending(self)
            self._deadline = time.monotonic() + FLUSH_TIMEOUT
            (logger.warning if warn else logger.info)(
                "fastattach: closing the connection from %s: %s", self._peer_name, reason)

    def _abort(self, reason: str) -> None:
        """Ends at once, dropping whatever the client has not read (it vanished or misbehaved)."""
        self._end(reason, warn=True)
        self._to_client.clear()

    # -- client -> us / pydevd -------------------------------------------------------------
    def _read_client(self) -> None:
        while self._can_read_client():
            try:
                data = self._client.recv(65536)
            except self._would_block:
                return
            except OSError as error:
                self._abort(f"connection lost ({error})")
                return
            if not data:
                self._end("the client closed the connection", warn=self.attached)
                self._to_client.clear()
                return
            try:
                bodies = self._client_decoder.feed(data)
            except ProtocolError as error:
                self._abort(f"malformed DAP framing: {error}")
                return
            for body in bodies:
                if self._ending is not None:
                    return
                try:
                    message = decode_message(body)
                except ProtocolError as error:
                    self._end(f"malformed DAP message: {error}", warn=True)
                    return
                self._last_client_seq = max(self._last_client_seq, message["seq"])
                if self.attached:
                    self._client_to_backend(message, body)
                else:
                    self._before_attach(message)

    def _before_attach(self, message: dict) -> None:
        step = self._handshake.receive(message)
        if step.auth_failed:
            locked_out = self._listener._throttle.record_failure(self._peer_host)
            if locked_out:
                logger.warning("fastattach: %s is locked out for %.2g s after %d failed attempts", self._peer_host,
                               locked_out, self._listener._throttle.failures(self._peer_host))
        if step.reply is not None:
            self._send_to_client(step.reply)
        if step.close:
            polite = step.reply is not None and step.reply["success"]
            self._end(step.log or "closed by the handshake", warn=not polite)
        elif step.log:
            logger.info("fastattach: %s: %s", self._peer_name, step.log)
        if step.start_session is not None:
            self._listener._throttle.record_success(self._peer_host)
            self._start_session(*step.start_session)

    def _start_session(self, initialize: dict, attach: dict) -> None:
        try:
            backend = self._listener._open_backend()
        except Exception as error:
            logger.exception("fastattach: could not start the debugger for %s", self._peer_name)
            self._send_to_client(error_response(
                attach, 0, f"fastattach could not start the debugger in this process: {error}"))
            self._end("the debugger failed to start", warn=True)
            return
        backend.setblocking(False)
        self._backend = backend
        self._client_decoder.max_body_bytes = DEFAULT_MAX_BODY_BYTES
        self._replayed_initialize_seq = initialize["seq"]
        self._to_backend += encode_message(initialize)
        self._to_backend += encode_message(attach)
        self.attached = True
        self._deadline = float("inf")
        logger.info("fastattach: client %s attached", self._peer_name)

    def _client_to_backend(self, message: dict, body: bytes) -> None:
        request_filter = REQUEST_FILTER
        if request_filter is not None and message["type"] == "request" and self._apply_request_filter(
                request_filter, message):
            return
        if message["type"] == "request" and message["command"] == "disconnect":
            self._client_disconnect_seq = message["seq"]
        # Unchanged, and in one buffer so pydevd never sees half a message from us.
        self._to_backend += b"Content-Length: %d\r\n\r\n" % len(body)
        self._to_backend += body

    def _apply_request_filter(self, request_filter, message: dict) -> bool:
        """True if REQUEST_FILTER answered or rewrote the request (it is then handled)."""
        try:
            verdict = request_filter(message)
        except Exception:
            logger.exception("fastattach: the request filter failed; forwarding %s", message.get("command"))
            return False
        if isinstance(verdict, str):
            self._send_to_client({
                "type": "response", "request_seq": message["seq"], "command": message["command"],
                "success": False, "message": verdict, "body": {"error": {"id": 1, "format": verdict}}})
            return True
        if isinstance(verdict, dict):
            self._to_backend += encode_message(verdict)
            return True
        return False

    # -- pydevd -> client -------------------------------------------------------------------
    def _read_backend(self) -> None:
        while True:
            try:
                data = self._backend.recv(262144)
            except _WOULD_BLOCK:
                return
            except OSError as error:
                data = b""
                logger.warning("fastattach: lost the connection to pydevd: %s", error)
            if not data:
                self._backend_disconnected = True
                self._end("pydevd closed the session")
                return
            try:
                messages = [decode_message(body) for body in self._backend_decoder.feed(data)]
            except ProtocolError as error:
                logger.error("fastattach: pydevd sent a malformed message (%s); ending the session", error)
                self._backend_disconnected = True
                self._end("internal error")
                return
            for message in messages:
                self._backend_to_client(message)
            if len(self._to_client) > MAX_PENDING_TO_CLIENT:
                self._abort(f"the client is not reading ({len(self._to_client)} bytes pending)")
                return

    def _backend_to_client(self, message: dict) -> None:
        if message["type"] == "response":
            if message["command"] == "initialize" and message["request_seq"] == self._replayed_initialize_seq:
                self._replayed_initialize_seq = None  # we answered it already, before pydevd existed
                return
            if message["command"] == "configurationDone" and message.get("success"):
                self._listener._configured.set()
            if message["request_seq"] == self._client_disconnect_seq and message["command"] == "disconnect":
                self._send_to_client(message)
                self._backend_disconnected = True
                self._end("the client disconnected")
                return
        self._send_to_client(message)

    def _send_to_client(self, message: dict) -> None:
        self._seq += 1
        message["seq"] = self._seq
        self._to_client += encode_message(message)

    def _drain_injected(self) -> None:
        if not self._injected:
            return
        with self._injected_lock:
            injected, self._injected = self._injected, collections.deque()
            dropped, self._dropped_events = self._dropped_events, 0
        if dropped:
            logger.warning("fastattach: dropped %d injected events: the client is not keeping up", dropped)
        if self.attached and self._ending is None:
            for message in injected:
                self._send_to_client(message)

    def _flush(self, sock: socket.socket, buffer: bytearray) -> None:
        while buffer:
            try:
                sent = sock.send(buffer[:262144])
            except self._would_block:
                return
            except OSError as error:
                buffer.clear()
                if sock is self._client:
                    self._abort(f"connection lost ({error})")
                else:
                    self._backend_disconnected = True
                    self._end("lost the connection to pydevd")
                return
            del buffer[:sent]

    # -- the end -----------------------------------------------------------------------------
    def _teardown(self) -> None:
        try:
            if self._backend is not None:
                self._disconnect_backend()
        except Exception:
            logger.exception("fastattach: error while detaching pydevd from %s", self._peer_name)
        finally:
            _close_quietly(self._backend)
            _close_quietly(self._client)
            self._waker.close()
            self.finished = True
            self._listener._session_ending(self)
            self.done.set()
            logger.info("fastattach: client %s gone", self._peer_name)

    def _disconnect_backend(self) -> None:
        """Sends pydevd the disconnect the client never sent, so suspended threads resume and
        breakpoints are removed, and waits (bounded) for its answer."""
        if self._backend_disconnected:
            return
        self._backend.settimeout(BACKEND_DISCONNECT_TIMEOUT)
        deadline = time.monotonic() + BACKEND_DISCONNECT_TIMEOUT
        seq = self._last_client_seq + 1
        request = {"seq": seq, "type": "request", "command": "disconnect",
                   "arguments": {"restart": False, "terminateDebuggee": False}}
        try:
            self._backend.sendall(bytes(self._to_backend) + encode_message(request))
            self._to_backend.clear()
            while time.monotonic() < deadline:
                self._backend.settimeout(max(0.01, deadline - time.monotonic()))
                data = self._backend.recv(262144)
                if not data:
                    return
                for body in self._backend_decoder.feed(data):
                    message = decode_message(body)
                    if message["type"] == "response" and message["request_seq"] == seq:
                        return
            logger.warning("fastattach: pydevd did not answer our disconnect within %g s",
                           BACKEND_DISCONNECT_TIMEOUT)
        except (OSError, ProtocolError) as error:
            logger.warning("fastattach: could not send pydevd a disconnect: %s", error)

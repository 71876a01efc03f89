"""Our listening socket: one idle accept thread, and one client at a time.

Listening costs one idle thread and this module, which imports only what a bare
interpreter has or nearly has (_socket, select, threading; not socket, selectors, logging
or typing, ~5 MB between them in a process that has not loaded them). Everything a
connection needs (socket, the relay in relay.py: the handshake, then the debugger, started
through the `open_backend` callable the owner of the session gave us) is imported only when
the first client connects, so a process that is never debugged never loads it.

Nothing here may raise into, block or crash the debuggee: every failure ends the client's
session with a log line on logging.getLogger("fastattach").
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import sys
import threading
import time

from .._handoff import prompt_gil_handoffs
from .._log import logger
from .security import (
    FailureThrottle,
    check_bind_allowed,
    resolvable,
    secrets_match,
    warn_if_plaintext_secret,
)
from .sockets import WOULD_BLOCK, Waker, close_quietly, format_peer, start_service_thread

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 MB with its imports)
if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Callable

    from .guessing import GuessLimiter
    from .relay import ClientSession

# From TCP accept to an accepted attach, TLS handshake included.
DEFAULT_AUTH_TIMEOUT = 20.0
# Second clients being told "busy" at once; more are just closed.
MAX_CONCURRENT_REJECTIONS = 4
# Connections still in their handshake (not yet attached), each served by its own thread.
# Beyond this the oldest of the principal with the most of them is closed for the newest: a
# flood of idle connections can neither hold the client slot nor exhaust threads nor push
# out another user's, and a client that authenticates at once gets in.
MAX_PENDING_HANDSHAKES = 32

BUSY_MESSAGE = ("another debugger client is already attached to this process; fastattach serves one client "
                "at a time: disconnect the other one first")


class _RefusalLog:
    """At most one log line a second about refused connections, each naming how many went
    unlogged before it: a flood of connections must not become a flood of the service's log
    (and formatting a line for each slowed the accept loop enough to drop connections)."""

    INTERVAL = 1.0

    def __init__(self):
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._unlogged = 0

    def warning(self, message: str, *args) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.INTERVAL:
                self._unlogged += 1
                return
            unlogged, self._unlogged, self._last = self._unlogged, 0, now
        if unlogged:
            message += " (%d more refused since the last such line)"
            args = (*args, unlogged)
        logger.warning(message, *args)


class ListenError(OSError):
    """The listening socket could not be opened; the message names host:port and the cause."""


class Listener:
    """Listens for DAP clients on (host, port) and relays one at a time to a backend.

    The one client slot goes to the first connection to complete an accepted attach (right
    secret), not to the first to connect: until then a connection holds nothing another needs.

    ``open_backend()`` returns our end of a new DAP connection to the debugger (pydevd, for
    the public API); it is called on the relay thread once a client has authenticated.
    ``request_filter(request)``, if given, sees each authenticated client request first and
    returns None (forward it unchanged), a str (refuse it with that message) or a dict (forward
    this rewritten request instead). ``on_backend_done()``, if given, is called on the relay
    thread after each session's backend got its disconnect (or could not), however it ended.
    ``on_attached(session)`` is called once a session's attach was accepted; ``exit_code()``,
    if given, is asked as the process ends: an int is told to the client in `exited`.
    ``answer_probe_request(arguments)``, if given, answers an authenticated fastattachProbes
    request (handshake.PROBES_COMMAND) on the relay thread: its response body, or ValueError.
    """

    def __init__(self, host: str, port: int, *, open_backend: Callable[[], socket.socket],
                 request_filter: Callable[[dict], object] | None = None, secret: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, allow_unauthenticated: bool = False,
                 auth_timeout: float = DEFAULT_AUTH_TIMEOUT, throttle: FailureThrottle | None = None,
                 guess_limiter: GuessLimiter | None = None, on_backend_done: Callable[[], None] | None = None,
                 on_attached: Callable[[ClientSession], None] | None = None,
                 exit_code: Callable[[], int | None] | None = None,
                 answer_probe_request: Callable[[dict], dict] | None = None):
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ValueError("secret must be a non-empty string (or None for no secret)")
        check_bind_allowed(host, port, secret=secret, allow_unauthenticated=allow_unauthenticated)
        warn_if_plaintext_secret(host, port, secret=secret, tls=ssl_context is not None)
        self._secret = secret
        self._ssl_context = ssl_context
        self._open_backend = open_backend
        self._request_filter = request_filter
        self._on_backend_done = on_backend_done
        self._on_attached = on_attached
        self._exit_code = exit_code
        self._answer_probe_request = answer_probe_request
        self._auth_timeout = auth_timeout
        self._throttle = throttle or FailureThrottle()
        self._guess_limiter = guess_limiter   # made with the first connection (guess_limiter)
        self._sock = self._bind(host, port)
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._session: ClientSession | None = None   # holds the client slot (attached)
        self._session_thread: threading.Thread | None = None
        self._pending: dict[ClientSession, threading.Thread] = {}   # in their handshake, oldest first
        self._last_accepted: ClientSession | None = None
        self._configured = threading.Event()
        self._rejections = 0
        self._refusal_log = _RefusalLog()
        self._failing_since: float | None = None   # monotonic time the accept loop began failing
        self._failure: Exception | None = None     # why, and whether the log has said so yet
        self._failure_logged = False
        self._unserved: tuple[int, object] | None = None   # (fd, peer) accepted, not yet served
        self._waker = Waker()
        self._accept_thread = start_service_thread(self._accept_loop, "fastattach.listener")
        logger.info("fastattach: listening on %s:%s%s%s", *self.address,
                    " (TLS)" if ssl_context else "", " (secret required)" if secret else "")

    @property
    def guess_limiter(self) -> GuessLimiter:
        """The listener's budget of secret checks, shared by all its connections."""
        # Made on the accept thread, with the first connection's handshake (under self._lock).
        if self._guess_limiter is None:
            from .guessing import GuessLimiter  # RSS: the guessing rules load with the first connection

            self._guess_limiter = GuessLimiter()
        return self._guess_limiter

    @staticmethod
    def _bind(host: str, port: int) -> _socket.socket:
        """A listening, non-blocking _socket.socket (the socket module is not loaded yet)."""
        where = f"{host}:{port}"
        try:
            infos = _socket.getaddrinfo(resolvable(host), port, 0, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE)
        except OSError as error:
            raise ListenError(error.errno or errno.EINVAL, f"cannot listen on {where}: cannot resolve {host!r}: "
                                                         f"{error.strerror or error}") from None
        family, _, _, _, sockaddr = infos[0]
        sock = _socket.socket(family, _socket.SOCK_STREAM)
        try:
            # Lets a restarted debuggee reuse its port at once; Linux still refuses a port in active use.
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            # Room for a burst of connections (a flood, a port scan) while the accept thread catches up:
            # with a short backlog a real client's SYN is dropped and retried a second later.
            sock.listen(128)
            sock.setblocking(False)
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
    def requires_secret(self) -> bool:
        return self._secret is not None

    def secret_matches(self, offered: str) -> bool:
        """Whether ``offered`` is this listener's secret (in constant time, like a client's)."""
        return self._secret is not None and secrets_match(self._secret, offered)

    @property
    def client_connected(self) -> bool:
        """A client has been accepted (attach with the right secret) and is still connected."""
        session = self._session
        return session is not None and session.active

    @property
    def responses_relayed(self) -> int:
        """How many of the backend's responses the attached client has been sent."""
        session = self._session
        return session.responses_relayed if session is not None else 0

    def wait_configured(self, timeout: float | None = None) -> bool:
        """Waits until a client's configurationDone got a successful response."""
        return self._configured.wait(timeout)

    def send_event(self, event: str, body: dict | None = None) -> None:
        """Injects an event into the attached client's stream; thread-safe, a no-op without a client."""
        session = self._session
        if session is not None and session.active:
            session.inject_event(event, body)

    def process_exiting(self) -> None:
        """The process ends now (os._exit): the attached client, if any, gets its last answers and
        `terminated` before this returns (bounded in time, see relay.EXIT_FLUSH_TIMEOUT)."""
        session = self._session
        if session is not None and session.active:
            session.process_exiting()

    def close(self, timeout: float = 5.0) -> None:
        """Disconnects the client (pydevd gets a disconnect, so threads resume), stops listening."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._waker.wake()
        with self._lock:
            session, thread = self._session, self._session_thread
            pending = list(self._pending.items())
        for other, _ in pending:
            other.stop()
        if session is not None:
            session.stop()
        for worker in (self._accept_thread, thread, *(worker for _, worker in pending)):
            # close() may come from code the client evaluates; never wait for ourselves.
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout)
        close_quietly(self._sock)
        self._waker.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def abandon_after_fork(self) -> None:
        """In a forked child: close our copies of the parent's sockets; the parent keeps its own.

        Only the forking thread lives on, so nothing is joined or woken, and no lock is taken
        (a thread of the parent may have held one at the fork). A shutdown() of the
        listening socket would stop the parent's listen too, so it is only closed."""
        self._closed = threading.Event()
        self._closed.set()
        sessions = [self._session, *self._pending]
        self._session = self._session_thread = self._accept_thread = self._last_accepted = None
        self._pending = {}
        for session in sessions:
            if session is not None:
                session.abandon_after_fork()
        if self._unserved is not None:
            try:
                os.close(self._unserved[0])
            except OSError:
                pass
            self._unserved = None
        self._sock.close()
        self._waker.close()

    # -- accepting -----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._sock.fileno(), select.POLLIN)
            poller.register(self._waker.reader, select.POLLIN)
            while not self._closed.is_set():
                # A connection we could not serve yet is retried every 100 ms.
                ready = poller.poll(100 if self._unserved is not None else None)
                if self._closed.is_set():
                    break
                if self._unserved is not None or any(fd == self._sock.fileno() for fd, _ in ready):
                    self._accept_and_recover()
                if any(fd == self._waker.reader for fd, _ in ready):
                    self._waker.drain()
        except Exception:
            logger.exception("fastattach: the listener failed; no more clients will be accepted")

    def _accept_and_recover(self) -> None:
        """Accepts and serves one connection; a failure (out of file descriptors or threads,
        typically) is waited out, the connection kept (or left in the kernel's queue) until
        it can be served. One log line when the shortage starts and one when it ends."""
        if self._unserved is None:
            try:
                self._unserved = self._sock._accept()
            except WOULD_BLOCK:
                return
            except OSError as error:
                self._serving_failed(error)
                return
        fd, peer = self._unserved
        try:
            self._serve(fd, peer)
        except Exception as error:
            self._serving_failed(error)
            return
        self._unserved = None
        if self._failing_since is not None:
            if not self._failure_logged:   # logging itself needed a descriptor (its first import does)
                logger.warning("fastattach: could not serve new connections (%s)", self._failure)
            logger.warning("fastattach: serving new connections again, after %.1f s",
                           time.monotonic() - self._failing_since)
            self._failing_since = self._failure = None

    def _serving_failed(self, error: Exception) -> None:
        if self._failing_since is None:
            self._failing_since, self._failure, self._failure_logged = time.monotonic(), error, False
        if not self._failure_logged:
            try:
                logger.warning("fastattach: cannot serve new connections (%s); retrying until it can", error)
                self._failure_logged = True
            except Exception:
                pass   # said on recovery instead
        self._closed.wait(0.1)   # back off instead of spinning on the ready socket

    def _serve(self, fd: int, peer) -> None:
        """Starts the connection's handshake or refusal; on failure the fd stays open for a retry."""
        if f"{__package__}.relay" not in sys.modules:
            # The first connection loads what serving one needs (socket, selectors, the relay
            # and the handshake): a few hundred blocking calls that must not each wait a whole
            # switch interval behind an application thread that never waits.
            with prompt_gil_handoffs():
                from . import relay  # noqa: F401  (RSS: the relay, socket and selectors load with the first client)
        import socket

        conn = socket.socket(self._sock.family, _socket.SOCK_STREAM, fileno=fd)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._admit_or_refuse(conn, peer)
        except BaseException:
            conn.detach()   # the fd is retried, so this object must not close it
            raise

    def _admit_or_refuse(self, conn: socket.socket, peer) -> None:
        # Without a secret nothing is guessed, and the kernel's socket table need not be read.
        from .guessing import peer_principal  # RSS: the guessing rules load with the first connection

        principal = (peer_principal(conn.getsockname(), peer) if self._secret is not None
                     else peer[0] if isinstance(peer, tuple) else str(peer))
        wait = self._throttle.retry_after(principal)
        from .._gevent_notice import REFUSAL as gevent_refusal  # RSS: a small module, loaded with the first client
        from .._gevent_notice import threading_patched  # RSS: as above

        if wait:
            refusal = (f"too many failed attempts from {principal}: try again in {wait:.1f} s, "
                       f"with the right secret")
        elif threading_patched():
            self._reject(conn, peer, gevent_refusal)   # here: a thread started for it would never run
            return
        elif self._start_handshake(conn, peer, principal):
            return
        else:
            refusal = BUSY_MESSAGE
        with self._lock:
            if self._rejections >= MAX_CONCURRENT_REJECTIONS:
                self._refusal_log.warning("fastattach: closed a connection from %s: %s", format_peer(peer), refusal)
                close_quietly(conn)
                return
            self._rejections += 1
        try:
            start_service_thread(lambda: self._reject(conn, peer, refusal), "fastattach.reject")
        except BaseException:
            with self._lock:
                self._rejections -= 1
            raise

    def _start_handshake(self, conn: socket.socket, peer, principal: str) -> bool:
        """Serves the connection's handshake (False if the listener is closing). While an attached
        client holds the slot, the handshake serves probe requests only and answers anything
        else with BUSY_MESSAGE (or, with no probe requests to serve, is refused: False)."""
        from .relay import ClientSession, SessionConfig  # RSS: loaded with the first client

        with self._lock:
            holder = self._session
            busy = BUSY_MESSAGE if holder is not None and holder.active else None
            if self._closed.is_set() or (busy is not None and self._answer_probe_request is None):
                return False
            config = SessionConfig(secret=self._secret, ssl_context=self._ssl_context,
                                   auth_timeout=self._auth_timeout, throttle=self._throttle,
                                   open_backend=self._open_backend, request_filter=self._request_filter,
                                   on_configured=self._configured.set, on_ending=self._session_ending,
                                   on_backend_done=self._on_backend_done, claim_slot=self._claim_slot,
                                   on_attached=self._on_attached, exit_code=self._exit_code,
                                   answer_probe_request=self._answer_probe_request, busy=busy,
                                   guesses=self.guess_limiter)
            session = self._last_accepted = ClientSession(conn, peer, config, principal)
            try:
                thread = start_service_thread(session.run, "fastattach.relay")
            except BaseException:
                session.discard()
                raise
            displaced = None
            if len(self._pending) >= MAX_PENDING_HANDSHAKES:
                displaced = self._oldest_of_the_most_pending()
                del self._pending[displaced]
            self._pending[session] = thread
        if displaced is not None:
            displaced.stop(f"{MAX_PENDING_HANDSHAKES} connections are waiting to authenticate; the oldest "
                           f"of {displaced.principal}'s gives way to a new one")
        return True

    def _oldest_of_the_most_pending(self) -> ClientSession:
        """The pending handshake to close for a new one (under self._lock): the oldest of the
        principal holding the most, so that one flooding principal only pushes out its own."""
        counts: dict[str, int] = {}
        for pending in self._pending:
            counts[pending.principal] = counts.get(pending.principal, 0) + 1
        most = max(counts.values())
        return next(pending for pending in self._pending if counts[pending.principal] == most)

    def _claim_slot(self, session: ClientSession) -> str | None:
        """Called by a session whose attach was accepted: None if it now holds the client slot,
        else why not. A client that reconnects right after its disconnect response can arrive
        while the old session is still detaching: it waits for that one instead of being busy."""
        from . import relay  # RSS: loaded with the first client

        for waited in (False, True):
            with self._lock:
                if self._closed.is_set():
                    return "the listener is closing"
                holder = self._session
                if holder is None or holder.finished or holder is session:
                    self._session = session
                    self._session_thread = self._pending.pop(session, None)
                    self._configured.clear()
                    return None
            if waited or not holder.leaving:
                return BUSY_MESSAGE
            holder.done.wait(relay.FLUSH_TIMEOUT + relay.BACKEND_DISCONNECT_TIMEOUT)
        return BUSY_MESSAGE

    def _reject(self, conn: socket.socket, peer, reason: str) -> None:
        """Answers the connection's first request with `reason`, without touching the current session."""
        from . import relay  # RSS: loaded with the first client

        try:
            if self._ssl_context is not None:
                conn.settimeout(relay.REFUSAL_TIMEOUT)
                conn = self._ssl_context.wrap_socket(conn, server_side=True)
            relay.refuse_connection(conn, reason)
            self._refusal_log.warning("fastattach: refused a connection from %s: %s", format_peer(peer), reason)
        except (OSError, ValueError) as error:
            self._refusal_log.warning("fastattach: refused a connection from %s: %s (%s)", format_peer(peer),
                                      reason, error)
            close_quietly(conn)
        except Exception:
            logger.exception("fastattach: error while refusing a connection")
            close_quietly(conn)
        finally:
            with self._lock:
                self._rejections -= 1

    def _session_ending(self, session: ClientSession) -> None:
        with self._lock:
            if session.finished:
                self._pending.pop(session, None)
            if session is self._session:
                self._configured.clear()

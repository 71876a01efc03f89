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
import select
import sys
import threading

from .._handoff import prompt_gil_handoffs
from .._log import logger
from .security import FailureThrottle, check_bind_allowed, resolvable, secrets_match, warn_if_plaintext_secret
from .sockets import WOULD_BLOCK, Waker, close_quietly, format_peer, start_service_thread

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 MB with its imports)
if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Callable

    from .relay import ClientSession

# From TCP accept to an accepted attach, TLS handshake included.
DEFAULT_AUTH_TIMEOUT = 20.0
# Second clients being told "busy" at once; more are just closed.
MAX_CONCURRENT_REJECTIONS = 4
# How long a new client waits for a connection that has not attached (a port probe, a health
# check, a client mid-handshake) to go away before it is told "busy".
NOT_ATTACHED_GRACE = 2.0

BUSY_MESSAGE = ("another debugger client is already attached to this process; fastattach serves one client "
                "at a time: disconnect the other one first")


class ListenError(OSError):
    """The listening socket could not be opened; the message names host:port and the cause."""


class Listener:
    """Listens for DAP clients on (host, port) and relays one at a time to a backend.

    ``open_backend()`` returns our end of a new DAP connection to the debugger (pydevd, for
    the public API); it is called on the relay thread once a client has authenticated.
    ``request_filter(request)``, if given, sees each authenticated client request first and
    returns None (forward it unchanged), a str (refuse it with that message) or a dict (forward
    this rewritten request instead).
    """

    def __init__(self, host: str, port: int, *, open_backend: Callable[[], socket.socket],
                 request_filter: Callable[[dict], object] | None = None, secret: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, allow_unauthenticated: bool = False,
                 auth_timeout: float = DEFAULT_AUTH_TIMEOUT, throttle: FailureThrottle | None = None):
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ValueError("secret must be a non-empty string (or None for no secret)")
        check_bind_allowed(host, port, secret=secret, allow_unauthenticated=allow_unauthenticated)
        warn_if_plaintext_secret(host, port, secret=secret, tls=ssl_context is not None)
        self._secret = secret
        self._ssl_context = ssl_context
        self._open_backend = open_backend
        self._request_filter = request_filter
        self._auth_timeout = auth_timeout
        self._throttle = throttle or FailureThrottle()
        self._sock = self._bind(host, port)
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._session: ClientSession | None = None
        self._session_thread: threading.Thread | None = None
        self._configured = threading.Event()
        self._rejections = 0
        self._waker = Waker()
        self._accept_thread = start_service_thread(self._accept_loop, "fastattach.listener")
        logger.info("fastattach: listening on %s:%s%s%s", *self.address,
                    " (TLS)" if ssl_context else "", " (secret required)" if secret else "")

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
            sock.listen(8)
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
        session = self._session
        self._session = self._session_thread = self._accept_thread = None
        if session is not None:
            session.abandon_after_fork()
        self._sock.close()
        self._waker.close()

    # -- accepting -----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._sock.fileno(), select.POLLIN)
            poller.register(self._waker.reader, select.POLLIN)
            while not self._closed.is_set():
                ready = poller.poll()
                if self._closed.is_set():
                    break
                if any(fd == self._sock.fileno() for fd, _ in ready):
                    self._accept_one()
                else:
                    self._waker.drain()
        except Exception:
            logger.exception("fastattach: the listener failed; no more clients will be accepted")

    def _accept_one(self) -> None:
        try:
            fd, peer = self._sock._accept()
        except WOULD_BLOCK:
            return
        except OSError as error:
            # Out of file descriptors, typically: back off instead of spinning on the ready socket.
            logger.warning("fastattach: accept() failed: %s", error)
            self._closed.wait(0.1)
            return
        if f"{__package__}.relay" not in sys.modules:
            # The first connection loads what serving one needs (socket, selectors, the relay
            # and the handshake): a few hundred blocking calls that must not each wait a whole
            # switch interval behind an application thread that never waits.
            with prompt_gil_handoffs():
                from . import relay  # noqa: F401  (RSS: the relay, socket and selectors load with the first client)
        import socket

        conn = socket.socket(self._sock.family, _socket.SOCK_STREAM, fileno=fd)
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
                               format_peer(peer))
                close_quietly(conn)
                return
            self._rejections += 1
        if refusal is not None:
            start_service_thread(lambda: self._reject(conn, peer, refusal), "fastattach.reject")
        else:
            start_service_thread(lambda: self._admit_later_or_reject(conn, peer), "fastattach.reject")

    def _admit(self, conn: socket.socket, peer) -> bool:
        """Starts a session for this connection unless another one is still running."""
        with self._lock:
            if self._closed.is_set() or (self._session is not None and not self._session.finished):
                return False
            from .relay import ClientSession, SessionConfig  # RSS: loaded with the first client

            self._configured.clear()
            config = SessionConfig(secret=self._secret, ssl_context=self._ssl_context,
                                   auth_timeout=self._auth_timeout, throttle=self._throttle,
                                   open_backend=self._open_backend, request_filter=self._request_filter,
                                   on_configured=self._configured.set, on_ending=self._session_ending)
            self._session = ClientSession(conn, peer, config)
            self._session_thread = start_service_thread(self._session.run, "fastattach.relay")
            return True

    def _admit_later_or_reject(self, conn: socket.socket, peer) -> None:
        # A client that reconnects right after its disconnect response can arrive while
        # the old session is still detaching, and any client can arrive just after a port
        # probe whose connection we have not seen close yet: wait for those instead of
        # calling the process busy.
        from . import relay  # RSS: loaded with the first client

        session = self._session
        if session is not None and (session.leaving or not session.attached):
            session.done.wait(relay.FLUSH_TIMEOUT + relay.BACKEND_DISCONNECT_TIMEOUT if session.leaving
                              else NOT_ATTACHED_GRACE)
            if self._admit(conn, peer):
                with self._lock:
                    self._rejections -= 1
                return
        self._reject(conn, peer, BUSY_MESSAGE)

    def _reject(self, conn: socket.socket, peer, reason: str) -> None:
        """Answers the connection's first request with `reason`, without touching the current session."""
        from . import relay  # RSS: loaded with the first client

        try:
            if self._ssl_context is not None:
                conn.settimeout(relay.REFUSAL_TIMEOUT)
                conn = self._ssl_context.wrap_socket(conn, server_side=True)
            relay.refuse_connection(conn, reason)
            logger.warning("fastattach: refused a connection from %s: %s", format_peer(peer), reason)
        except (OSError, ValueError) as error:
            logger.warning("fastattach: refused a connection from %s: %s (%s)", format_peer(peer), reason, error)
            close_quietly(conn)
        except Exception:
            logger.exception("fastattach: error while refusing a connection")
            close_quietly(conn)
        finally:
            with self._lock:
                self._rejections -= 1

    def _session_ending(self, session: ClientSession) -> None:
        with self._lock:
            if session is self._session:
                self._configured.clear()

"""The relay between one accepted DAP client and pydevd (loaded on the first connection).

The client's handshake is answered here (see handshake.py); only after an accepted
`attach` is pydevd started (through the session's `open_backend`) and the client's
initialize and attach replayed to it. From then on one relay thread copies messages both
ways, renumbering what the client receives so that our own messages (the initialize
response, injected events) and pydevd's form one sequence.

Nothing here may raise into, block or crash the debuggee: every failure ends the client's
session with a log line on logging.getLogger("fastattach").
"""

from __future__ import annotations

import collections
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from .._handoff import prompt_gil_handoffs
from .._log import logger
from .adapter import AdapterRules
from .guessing import GuessLimiter
from .handshake import MAX_BODY_BYTES_BEFORE_ATTACH, Handshake
from .request_shapes import check_request
from .security import FailureThrottle
from .sockets import WOULD_BLOCK, Waker, close_quietly, format_peer, would_block
from .wire import (
    DEFAULT_MAX_BODY_BYTES,
    FrameDecoder,
    ProtocolError,
    decode_message,
    encode_body,
    encode_message,
    error_response,
    frame,
    response,
)

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
# How long a refused connection gets to send the request we answer with the reason.
REFUSAL_TIMEOUT = 5.0
# How long os._exit() waits for the relay to tell the client the debuggee is ending.
EXIT_FLUSH_TIMEOUT = 2.0


class SessionConfig(NamedTuple):
    """What a session needs from whoever accepted its connection, and how it reports back."""
    secret: str | None
    ssl_context: object | None              # ssl.SSLContext, or None for plain DAP
    auth_timeout: float                     # seconds from accept to an accepted attach
    throttle: FailureThrottle
    open_backend: Callable[[], socket.socket]
    request_filter: Callable[[dict], object] | None   # see Listener
    on_configured: Callable[[], None]       # a configurationDone succeeded
    on_ending: Callable[[ClientSession], None]   # the client counts as gone from now on
    # After pydevd got (or could not get) our disconnect: the backend's owner makes sure no
    # thread stays suspended and no breakpoint stays set, whatever pydevd made of it.
    on_backend_done: Callable[[], None] | None = None
    # An accepted attach asks for the one client slot: None if granted, else the refusal.
    claim_slot: Callable[[ClientSession], str | None] | None = None
    # A session has started (its attach was accepted and pydevd has it): the owner may read
    # its initialize_arguments and attach_arguments (child processes, see _subprocess.py).
    on_attached: Callable[[ClientSession], None] | None = None
    # As the process ends: the exit code to tell the client in `exited` (a child's session,
    # as debugpy's launcher tells it), or None to send no `exited` (debugpy's attach sessions).
    exit_code: Callable[[], int | None] | None = None
    # Answers an authenticated fastattachProbes request (see handshake.PROBES_COMMAND): the
    # response body, or ValueError whose text is the error shown. None: probes are not served.
    answer_probe_request: Callable[[dict], dict] | None = None
    # Another client holds the debugging session: only probe requests are served (see Handshake).
    busy: str | None = None
    # The listener's bound on secret checks per second, shared by all its connections.
    guesses: GuessLimiter | None = None


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
                    conn.sendall(encode_message({**error_response(request, reason), "seq": 1}))
                return
    except (OSError, ProtocolError):
        pass
    finally:
        close_quietly(conn)


class ClientSession:
    """One client connection, served by one thread from accept to close."""

    def __init__(self, conn: socket.socket, peer, config: SessionConfig, principal: str | None = None):
        self._config = config
        self._client = conn
        self._peer = peer
        self._peer_name = format_peer(peer)
        # Whom failed secrets are counted against (security.peer_principal); the address by default.
        self.principal = principal or (peer[0] if isinstance(peer, tuple) else str(peer))
        self._backend: socket.socket | None = None
        self._tls = config.ssl_context is not None
        self._would_block = would_block(self._tls)
        self._handshake = Handshake(config.secret, busy=config.busy)
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
        self._backend_unreadable = False   # its stream broke (an oversized message): write only
        self._injected: collections.deque = collections.deque()
        self._injected_lock = threading.Lock()
        self._dropped_events = 0
        self._waker = Waker()
        self._stop = threading.Event()
        self._stop_reason = "the listener is closing"
        self._deadline = time.monotonic() + config.auth_timeout
        self._ending: str | None = None  # why the session is ending: flush, then close
        # From the start of an authenticated session to its end: without it, pydevd's threads
        # and ours starve beside an application thread that keeps the GIL (see prompt_gil_handoffs).
        self._gil_handoffs: prompt_gil_handoffs | None = None
        self.attached = False
        self.finished = False
        self.responses_relayed = 0   # the backend's responses queued for the client
        self.done = threading.Event()
        # What debugpy's adapter would do on top of pydevd (see adapter.py).
        self._adapter = AdapterRules()
        self._process_exiting = False
        self._said_exited = False
        self._said_goodbye = False
        self._relay_thread: threading.Thread | None = None
        self._relay_over = threading.Event()   # the relay loop has ended: the client has our last words
        # The client's initialize and attach arguments (secret removed), once attached.
        self.initialize_arguments: dict = {}
        self.attach_arguments: dict = {}
        self._reverse_requests: dict[int, str] = {}   # our requests to the client (startDebugging): seq -> command
        # Watches for gevent patching threading after the attach (see _gevent_notice.py).
        self._gevent_watch = None

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

    def inject_request(self, command: str, arguments: dict) -> None:
        """A reverse request to the client (startDebugging); its response is ours, not pydevd's."""
        with self._injected_lock:
            if len(self._injected) >= MAX_INJECTED_EVENTS:
                self._dropped_events += 1
                return
            self._injected.append({"type": "request", "command": command, "arguments": arguments})
        self._waker.wake()

    @property
    def supports_start_debugging(self) -> bool:
        return self.initialize_arguments.get("supportsStartDebuggingRequest") is True

    def discard(self) -> None:
        """Undoes __init__ for a session whose thread could not start; the connection is not ours."""
        self._waker.close()

    def stop(self, reason: str = "the listener is closing") -> None:
        self._stop_reason = reason
        self._stop.set()
        self._waker.wake()

    def process_exiting(self, timeout: float = EXIT_FLUSH_TIMEOUT) -> None:
        """The debuggee calls os._exit() (see _exit_hook.py): the relay answers what pydevd
        left open, says `terminated` and flushes, while this thread waits, at most `timeout`."""
        if self._relay_thread is threading.current_thread() or not self.attached or self._relay_over.is_set():
            return
        self._process_exiting = True
        self._waker.wake()
        self._relay_over.wait(timeout)

    def abandon_after_fork(self) -> None:
        """In a forked child: close this session's file descriptors, nothing more.

        The relay thread did not survive the fork, and the sockets are the parent's too: a
        shutdown() would end the parent's client connection, so each one is only closed (an
        SSL socket's close() sends no close_notify). The switch interval the session had
        shortened is the parent's business, so the child gets its own back."""
        for sock in (self._client, self._backend):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self._waker.close()
        if self._gil_handoffs is not None:
            self._gil_handoffs.__exit__(None, None, None)
            self._gil_handoffs = None
        if self._gevent_watch is not None:
            self._gevent_watch.close()
        self.finished = True

    # -- the relay thread --------------------------------------------------------------------
    def run(self) -> None:
        self._relay_thread = threading.current_thread()
        try:
            logger.info("fastattach: client connected from %s", self._peer_name)
            if self._config.ssl_context is not None and not self._tls_handshake():
                return
            self._client.setblocking(False)
            self._relay()
        except Exception:
            logger.exception("fastattach: the relay for %s failed; closing that connection", self._peer_name)
        finally:
            self._relay_over.set()
            self._teardown()

    def _tls_handshake(self) -> bool:
        try:
            self._client.settimeout(max(0.1, self._deadline - time.monotonic()))
            self._client = self._config.ssl_context.wrap_socket(self._client, server_side=True)
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
                    self._say_goodbye()
                    self._end(self._stop_reason)
                if self._process_exiting and self._ending is None:
                    self._end_for_exit()
                self._drain_injected()
                if self._ending is not None and not self._to_client:
                    return
                now = time.monotonic()
                if now >= self._deadline:
                    if self._ending is not None:
                        return  # the client did not take our last messages in time
                    self._end(f"no attach within {self._config.auth_timeout:g} s", warn=True)
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
            reading = not (self._backend_disconnected or self._backend_unreadable)
            backend_events = (selectors.EVENT_READ if reading else 0) | (
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
            self._config.on_ending(self)
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
        checks_secret = self._handshake.checks_secret(message)
        if checks_secret and not self._may_check_secret(message):
            return
        step = self._handshake.receive(message)
        if checks_secret and not step.auth_failed and self._config.guesses is not None:
            self._config.guesses.give_back()
        if step.auth_failed:
            locked_out = self._config.throttle.record_failure(self.principal)
            if locked_out:
                logger.warning("fastattach: %s is locked out for %.2g s after %d failed attempts", self.principal,
                               locked_out, self._config.throttle.failures(self.principal))
        if step.reply is not None:
            self._send_to_client(step.reply)
        if step.close:
            polite = step.reply is not None and step.reply["success"]
            self._end(step.log or "closed by the handshake", warn=not polite)
        elif step.log:
            logger.info("fastattach: %s: %s", self._peer_name, step.log)
        if step.probe_request is not None:
            self._config.throttle.record_success(self.principal)
            self._answer_probe_request(step.probe_request)
        if step.start_session is not None:
            self._config.throttle.record_success(self.principal)
            initialize, attach = step.start_session
            problem = check_request(attach)
            if problem is None:
                problem = _refusal_if_gevent_patched()
            if problem is None and self._config.claim_slot is not None:
                problem = self._config.claim_slot(self)
            if problem is not None:
                self._send_to_client(error_response(attach, problem))
                self._end(problem, warn=True)
                return
            self._start_session(initialize, attach)

    def _answer_probe_request(self, request: dict) -> None:
        """Answered here, on the relay thread: no debugging session, no pydevd."""
        answer = self._config.answer_probe_request
        problem = check_request(request)
        if problem is None and answer is None:
            problem = "this listener does not serve probe requests"
        if problem is not None:
            logger.warning("fastattach: refused a probe request from %s: %s", self._peer_name, problem)
            self._send_to_client(error_response(request, problem))
            return
        try:
            body = answer(request.get("arguments") or {})
        except ValueError as error:
            self._send_to_client(error_response(request, str(error)))
            return
        except Exception as error:
            logger.exception("fastattach: the probe request from %s failed", self._peer_name)
            self._send_to_client(error_response(request, f"the probe request failed: {error!r}"))
            return
        self._send_to_client(response(request, body=body))

    def _may_check_secret(self, attach: dict) -> bool:
        """Waits for the listener's guess budget before the secret in `attach` is compared;
        False (the attach answered and the session ending, or stopped) if it may not be."""
        throttle, guesses = self._config.throttle, self._config.guesses
        # Other connections of a principal that began before its lockout do not get around it.
        problem = None
        if wait := throttle.retry_after(self.principal):
            problem = (f"too many failed attempts from {self.principal}: try again in {wait:.1f} s, "
                       f"with the right secret")
        elif guesses is not None and not guesses.acquire(lambda: throttle.failures(self.principal),
                                                         deadline=self._deadline, cancelled=self._gave_up):
            if self._stop.is_set():
                return False   # the relay loop says why
            if self._client_hung_up():
                self._abort("the client closed the connection while its attach waited to be checked")
                return False
            problem = ("too many attempts to authenticate on this port just now (someone may be guessing "
                       "the secret): try again in a few seconds")
        if problem is None:
            return True
        self._send_to_client(error_response(attach, problem))
        self._end(problem)   # not a warning each: a guessing flood would flood the log (see the listener's)
        return False

    def _gave_up(self) -> bool:
        return self._stop.is_set() or self._client_hung_up()

    def _client_hung_up(self) -> bool:
        """The client has closed (or shut down its sending side): a connection that went away
        must not keep its place in the line of attaches waiting to be checked."""
        poller = select.poll()
        poller.register(self._client.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))

    def _start_session(self, initialize: dict, attach: dict) -> None:
        self._gil_handoffs = prompt_gil_handoffs().__enter__()
        try:
            backend = self._config.open_backend()
        except Exception as error:
            if isinstance(error, RuntimeError) and str(error):
                # A refusal the backend explains itself (another tool holds what it needs).
                logger.warning("fastattach: could not start the debugger for %s: %s", self._peer_name, error)
            else:
                logger.exception("fastattach: could not start the debugger for %s", self._peer_name)
            self._send_to_client(error_response(
                attach, f"fastattach could not start the debugger in this process: {error}"))
            self._end("the debugger failed to start", warn=True)
            return
        backend.setblocking(False)
        self._backend = backend
        self._client_decoder.max_body_bytes = DEFAULT_MAX_BODY_BYTES
        self._replayed_initialize_seq = initialize["seq"]
        self._to_backend += encode_message(initialize)
        self._to_backend += encode_message(attach)
        self.initialize_arguments = dict(initialize.get("arguments") or {})
        self.attach_arguments = dict(attach.get("arguments") or {})
        self.attached = True
        self._deadline = float("inf")
        logger.info("fastattach: client %s attached", self._peer_name)
        if self._config.on_attached is not None:
            try:
                self._config.on_attached(self)
            except Exception:
                logger.exception("fastattach: could not prepare child processes' debugging for %s", self._peer_name)
        self._tell_about_gevent(attach.get("arguments"))

    def _tell_about_gevent(self, attach_arguments) -> None:
        """The gevent notice (see _gevent_notice.py): now, or once gevent patches threading."""
        from .. import _gevent_notice  # RSS: only for a session that has started

        try:
            reason = _gevent_notice.reason_at_attach(attach_arguments)
            if reason is None:
                self._gevent_watch = _gevent_notice.PatchWatch(self._gevent_patched, log=logger)
                return
        except Exception:   # the notice is advice: the session goes on without it
            logger.exception("fastattach: could not check for gevent")
            return
        logger.warning("%s", _gevent_notice.NOTICE.format(reason=reason).rstrip())
        self._send_to_client(_gevent_output_event(reason))

    def _gevent_patched(self, reason: str) -> None:
        """From the program's thread, inside its gevent patch_all(): queue the notice."""
        from .. import _gevent_notice  # RSS: only for a session that has started

        logger.warning("%s", _gevent_notice.NOTICE.format(reason=reason).rstrip())
        event = _gevent_output_event(reason)
        self.inject_event(event["event"], event["body"])

    def _client_to_backend(self, message: dict, body: bytes) -> None:
        if message["type"] == "response" and message.get("request_seq") in self._reverse_requests:
            command = self._reverse_requests.pop(message["request_seq"])
            if not message.get("success"):
                logger.warning("fastattach: the client refused %s: %s", command, message.get("message"))
            return
        if message["type"] == "request":
            problem = check_request(message)
            if problem is not None:
                logger.warning("fastattach: refused a request from %s: %s", self._peer_name, problem)
                self._send_to_client(error_response(message, problem))
                return
        # Before the filter: a disconnect it rewrites (production mode drops terminateDebuggee)
        # keeps its seq, and pydevd's answer to it must still end the session.
        if message["type"] == "request" and message["command"] == "disconnect":
            self._client_disconnect_seq = message["seq"]
        if message["type"] == "request":
            message, body, answered = self._as_debugpys_adapter(message, body)
            if answered:
                return
        request_filter = self._config.request_filter
        if request_filter is not None and message["type"] == "request" and self._apply_request_filter(
                request_filter, message):
            return
        # Unchanged, and in one buffer so pydevd never sees half a message from us.
        self._to_backend += frame(body)

    def _as_debugpys_adapter(self, message: dict, body: bytes) -> tuple[dict, bytes, bool]:
        """The request as debugpy's adapter would pass it to pydevd (see adapter.py), and
        whether it is answered already (refused)."""
        verdict = self._adapter.request_from_client(message)
        if isinstance(verdict, str):
            self._send_to_client(error_response(message, verdict))
            return message, body, True
        if isinstance(verdict, dict):
            return verdict, encode_body(verdict), False
        return message, body, False

    def _apply_request_filter(self, request_filter, message: dict) -> bool:
        """True if the request filter answered or rewrote the request (it is then handled)."""
        try:
            verdict = request_filter(message)
        except Exception:
            logger.exception("fastattach: the request filter failed; forwarding %s", message.get("command"))
            return False
        if isinstance(verdict, str):
            self._send_to_client(error_response(message, verdict))
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
            except WOULD_BLOCK:
                return
            except OSError as error:
                data = b""
                logger.warning("fastattach: lost the connection to pydevd: %s", error)
            if not data:
                self._backend_disconnected = True
                self._say_goodbye()
                self._end("pydevd closed the session")
                return
            try:
                messages = [decode_message(body) for body in self._backend_decoder.feed(data)]
            except ProtocolError as error:
                # pydevd's stream cannot be followed any more; its reader still takes our
                # disconnect (see _teardown), so suspended threads resume.
                logger.error("fastattach: pydevd sent a message the relay cannot pass on (%s); ending the session",
                             error)
                self._backend_unreadable = True
                self._send_to_client({"type": "event", "event": "output", "body": {
                    "category": "important",
                    "output": f"fastattach: the debugger's answer could not be passed on ({error}); the session "
                              f"ends and the program runs on\n"}})
                self._end("pydevd sent a message the relay cannot pass on", warn=True)
                return
            for message in messages:
                self._backend_to_client(message)
            if len(self._to_client) > MAX_PENDING_TO_CLIENT:
                self._abort(f"the client is not reading ({len(self._to_client)} bytes pending)")
                return

    def _backend_to_client(self, message: dict) -> None:
        if self._said_goodbye:
            return  # the client has had its last answers and `terminated`: nothing may follow them
        if message["type"] == "event" and message["event"] == "terminated":
            self._say_exited()   # pydevd's own, at a normal exit: `exited` goes first
        if message["type"] == "response":
            if message["command"] == "initialize" and message["request_seq"] == self._replayed_initialize_seq:
                self._replayed_initialize_seq = None  # we answered it already, before pydevd existed
                return
            if message["command"] == "configurationDone" and message.get("success"):
                self._config.on_configured()
            if message["request_seq"] == self._client_disconnect_seq and message["command"] == "disconnect":
                # debugpy's adapter says `terminated` first, then answers the disconnect
                # (sessions.py, Session.finalize, then clients.py, disconnect_request).
                self._say_goodbye(answering=message)
                self._backend_disconnected = True
                self._end("the client disconnected")
                return
        self._send_to_client(message)
        if message["type"] == "response":
            self.responses_relayed += 1

    def _send_to_client(self, message: dict) -> None:
        if self.attached:
            message = self._adapter.to_client(message)
        self._seq += 1
        message["seq"] = self._seq
        if message["type"] == "request":
            self._reverse_requests[self._seq] = message["command"]
        self._to_client += encode_message(message)

    def _say_goodbye(self, answering: dict | None = None) -> None:
        """Tell the client that the session is over, as debugpy's adapter does: every request
        pydevd left unanswered gets its answer, `terminated` is sent once (if pydevd has not
        sent it), and then `answering`, pydevd's answer to the client's disconnect, if given."""
        if self.attached and self._ending is None and not self._said_goodbye:
            self._said_goodbye = True
            for message in self._adapter.goodbye(answered_by_pydevd=None if answering is None
                                                 else answering["request_seq"]):
                self._send_to_client(message)
        if answering is not None:
            self._send_to_client(answering)

    def _say_exited(self) -> None:
        """`exited` once, before `terminated`, when the process's end is known to be under way
        and its exit code is to be told (a child's session)."""
        if self._said_exited or self._said_goodbye or self._config.exit_code is None:
            return
        self._said_exited = True
        try:
            code = self._config.exit_code()
        except Exception:
            logger.exception("fastattach: could not tell the exit code")
            return
        if code is not None:
            self._send_to_client({"type": "event", "event": "exited", "body": {"exitCode": code}})

    def _end_for_exit(self) -> None:
        """os._exit() is under way: take what pydevd has written already, then say goodbye."""
        if self._backend is not None and not self._backend_disconnected:
            self._read_backend()
        if self._ending is None:
            self._say_exited()
            self._say_goodbye()
            self._backend_disconnected = True   # nothing may wait for pydevd: the process ends now
            self._end("the debuggee is exiting (os._exit)")

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
                if self._config.on_backend_done is not None:
                    self._config.on_backend_done()
        except Exception:
            logger.exception("fastattach: error while detaching pydevd from %s", self._peer_name)
        finally:
            if self._gevent_watch is not None:
                self._gevent_watch.close()
            close_quietly(self._backend)
            close_quietly(self._client)
            self._waker.close()
            if self._gil_handoffs is not None:
                self._gil_handoffs.__exit__(None, None, None)
            self.finished = True
            self._config.on_ending(self)
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
            if self._backend_unreadable:
                return   # no answer can be read; on_backend_done sees to the threads
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


def _refusal_if_gevent_patched() -> str | None:
    """gevent patched threading while this client was authenticating: pydevd's threads, started
    from here now, would be greenlets of this thread, which never runs gevent's hub."""
    from .. import _gevent_notice  # RSS: only once an attach is accepted

    return _gevent_notice.REFUSAL if _gevent_notice.threading_patched() else None


def _gevent_output_event(reason: str) -> dict:
    from .. import _gevent_notice  # RSS: only for a session that has started

    return {"type": "event", "event": "output",
            "body": {"category": "important", "output": _gevent_notice.NOTICE.format(reason=reason)}}

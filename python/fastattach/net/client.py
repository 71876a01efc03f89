"""A small blocking DAP client over a socket, for tests, benchmarks and health checks.

Not used at run time: the debuggee never imports it. Every message in both directions is
kept in ``transcript`` (direction, message, time), so callers can validate a whole session
against the DAP schema afterwards. A DAPClient is a context manager that closes itself.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

from .sockets import close_quietly
from .wire import FrameDecoder, decode_message, encode_message


class DAPError(RuntimeError):
    pass


class DAPClient:
    def __init__(self, sock: socket.socket):
        self._sock = sock
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send_lock = threading.Lock()
        self._seq = 0
        self._cond = threading.Condition()
        self._responses: dict[int, dict] = {}
        self._events: list[dict] = []
        self._requests: list[dict] = []   # reverse requests from the debuggee (startDebugging)
        self._closed = False
        self.transcript: list[tuple[str, dict, float]] = []
        self.capabilities: dict | None = None  # the initialize response body, once initialized
        self._reader = threading.Thread(target=self._read_loop, name="fastattach-dapclient", daemon=True)
        self._reader.start()

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = 10.0, *, ssl_context: ssl.SSLContext | None = None,
                server_hostname: str | None = None) -> DAPClient:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=min(5.0, timeout))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        sock.settimeout(None)
        return cls(sock)

    # -- reading -------------------------------------------------------------------
    def _read_loop(self) -> None:
        decoder = FrameDecoder(max_body_bytes=64 * 1024 * 1024)
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                for body in decoder.feed(data):
                    message = decode_message(body)
                    with self._cond:
                        self.transcript.append(("recv", message, time.monotonic()))
                        if message["type"] == "response":
                            self._responses[message["request_seq"]] = message
                        elif message["type"] == "event":
                            self._events.append(message)
                        elif message["type"] == "request":
                            self._requests.append(message)
                        self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writing -------------------------------------------------------------------
    def send(self, command: str, arguments: dict | None = None) -> int:
        with self._send_lock:
            self._seq += 1
            message = {"seq": self._seq, "type": "request", "command": command}
            if arguments is not None:
                message["arguments"] = arguments
            with self._cond:
                self.transcript.append(("send", message, time.monotonic()))
            self._sock.sendall(encode_message(message))
            return self._seq

    def send_raw(self, data: bytes) -> None:
        self._sock.sendall(data)

    def wait_response(self, seq: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self._responses:
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise DAPError(f"connection closed while waiting for the response to request {seq}")
                if remaining <= 0:
                    raise DAPError(f"no response to request {seq} within {timeout} s")
                self._cond.wait(remaining)
            return self._responses.pop(seq)

    def request(self, command: str, arguments: dict | None = None, timeout: float = 10.0,
                check: bool = True) -> dict:
        response = self.wait_response(self.send(command, arguments), timeout)
        if check and not response.get("success"):
            raise DAPError(f"{command} failed: {response.get('message')}")
        return response

    def wait_event(self, name: str, timeout: float = 10.0, predicate=None) -> dict:
        """The first not-yet-consumed event called ``name`` (and matching ``predicate``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, event in enumerate(self._events):
                    if event["event"] == name and (predicate is None or predicate(event)):
                        del self._events[i]
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DAPError(f"no {name!r} event within {timeout} s")
                if self._closed:
                    raise DAPError(f"connection closed while waiting for a {name!r} event")
                self._cond.wait(remaining)

    def wait_request(self, command: str, timeout: float = 10.0) -> dict:
        """The first not-yet-taken reverse request ``command`` from the debuggee (startDebugging)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, request in enumerate(self._requests):
                    if request["command"] == command:
                        del self._requests[i]
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DAPError(f"no {command!r} request within {timeout} s")
                if self._closed:
                    raise DAPError(f"connection closed while waiting for a {command!r} request")
                self._cond.wait(remaining)

    def requests(self, command: str | None = None) -> list[dict]:
        """Drain and return the reverse requests not taken yet (all, or those called ``command``)."""
        with self._cond:
            taken = [r for r in self._requests if command is None or r["command"] == command]
            self._requests = [r for r in self._requests if not (command is None or r["command"] == command)]
            return taken

    def respond(self, request: dict, body: dict | None = None, error: str | None = None) -> None:
        """Answer a reverse request."""
        with self._send_lock:
            self._seq += 1
            message = {"seq": self._seq, "type": "response", "request_seq": request["seq"],
                       "command": request["command"], "success": error is None}
            if error is not None:
                message["message"] = error
            elif body is not None:
                message["body"] = body
            with self._cond:
                self.transcript.append(("send", message, time.monotonic()))
            self._sock.sendall(encode_message(message))

    def events(self, name: str | None = None) -> list[dict]:
        """Drain and return the pending events (all, or those called ``name``)."""
        with self._cond:
            taken = [e for e in self._events if name is None or e["event"] == name]
            self._events = [e for e in self._events if not (name is None or e["event"] == name)]
            return taken

    # -- a debugpy-style attach handshake ------------------------------------------
    def initialize(self, timeout: float = 10.0, **capabilities) -> dict:
        """``capabilities`` adds client capabilities (supportsStartDebuggingRequest=True)."""
        response = self.request("initialize", {
            "clientID": "fastattach-test", "clientName": "fastattach test client", "adapterID": "debugpy",
            "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True,
            "supportsVariableType": True, "supportsRunInTerminalRequest": False, **capabilities,
        }, timeout=timeout)
        self.capabilities = response.get("body", {})
        return response

    def attach(self, breakpoints: dict[str, list[dict]] | None = None, exception_filters=(),
               function_breakpoints: list[dict] | None = None, timeout: float = 30.0, **attach_args) -> dict:
        """initialize -> attach -> initialized -> setBreakpoints* -> configurationDone -> attach response.

        Skips initialize when the caller already sent it. Returns
        ``{path: setBreakpoints response body breakpoints}``.
        """
        if self.capabilities is None:
            self.initialize(timeout)
        args = {"name": "Attach", "type": "python", "request": "attach", "justMyCode": True}
        args.update(attach_args)
        attach_seq = self.send("attach", args)
        self.wait_event("initialized", timeout)
        results = {}
        for path, bps in (breakpoints or {}).items():
            results[path] = self.set_breakpoints(path, bps)
        if function_breakpoints is not None:
            self.request("setFunctionBreakpoints", {"breakpoints": function_breakpoints})
        self.request("setExceptionBreakpoints", {"filters": list(exception_filters)})
        self.request("configurationDone")
        response = self.wait_response(attach_seq, timeout)
        if not response.get("success"):
            raise DAPError(f"attach failed: {response.get('message')}")
        return results

    def set_breakpoints(self, path: str, breakpoints: list[dict]) -> list[dict]:
        body = self.request("setBreakpoints", {
            "source": {"path": path}, "breakpoints": breakpoints,
            "lines": [bp["line"] for bp in breakpoints],
        })["body"]
        return body["breakpoints"]

    def wait_stopped(self, timeout: float = 10.0) -> dict:
        return self.wait_event("stopped", timeout)["body"]

    def top_frame(self, thread_id: int) -> dict:
        body = self.request("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 20})["body"]
        return body["stackFrames"][0]

    def evaluate(self, expression: str, frame_id: int | None = None, context: str = "repl") -> str:
        args = {"expression": expression, "context": context}
        if frame_id is not None:
            args["frameId"] = frame_id
        return self.request("evaluate", args)["body"]["result"]

    def disconnect(self, timeout: float = 10.0) -> None:
        try:
            self.request("disconnect", {"restart": False}, timeout=timeout, check=False)
        except DAPError:
            pass
        self.close()

    def close(self) -> None:
        close_quietly(self._sock)
        self._reader.join(5)

    def __enter__(self) -> DAPClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

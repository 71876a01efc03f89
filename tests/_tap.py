"""A DAP tap: a loopback TCP proxy that records every message in both directions.

Editors (Emacs dap-mode) do not hand us their traffic, so their sessions go through a
tap and the recorded log is checked with ``dap_schema``. Bytes are forwarded unchanged
unless a ``rewrite_server_message`` hook is given; the negative controls use that hook
to break a correct server on purpose and prove the checks notice.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

from fastattach.net.wire import FrameDecoder, ProtocolError, decode_message, encode_message

# Returns the message to forward, or None to drop it.
MessageRewrite = Callable[[dict], "dict | None"]


class DAPTap:
    """Listens on 127.0.0.1 (a free port) and relays each connection to ``upstream``.

    ``records`` holds ``{"conn", "dir": "c2s"|"s2c", "t", "msg"}`` dicts, or
    ``{"conn", "dir", "framing_error"}`` when a stream stops being DAP; the same lines go
    to ``log_path`` as JSONL when one is given.
    """

    def __init__(self, upstream: tuple[str, int], log_path=None, *,
                 rewrite_server_message: MessageRewrite | None = None, connect_timeout: float = 10.0):
        self.upstream = upstream
        self.records: list[dict] = []
        self._log = open(log_path, "w", encoding="utf-8") if log_path else None
        self._rewrite = rewrite_server_message
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._closing = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="dap-tap-accept", daemon=True)
        self._acceptor.start()

    def __enter__(self) -> DAPTap:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept_loop(self) -> None:
        connection_number = 0
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            connection_number += 1
            try:
                server = socket.create_connection(self.upstream, timeout=self._connect_timeout)
                server.settimeout(None)
            except OSError as e:
                self._record({"conn": connection_number, "dir": "c2s",
                              "framing_error": f"tap could not reach {self.upstream}: {e}"})
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closing:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
                for source, sink, direction in ((client, server, "c2s"), (server, client, "s2c")):
                    thread = threading.Thread(target=self._pump, args=(source, sink, connection_number, direction),
                                              name=f"dap-tap-{direction}-{connection_number}", daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, conn: int, direction: str) -> None:
        decoder = FrameDecoder(max_body_bytes=64 * 1024 * 1024)
        rewrite = self._rewrite if direction == "s2c" else None
        broken = False
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                forward = [] if rewrite else [data]
                if not broken:
                    try:
                        bodies = decoder.feed(data)
                    except ProtocolError as e:
                        self._record({"conn": conn, "dir": direction, "framing_error": str(e)})
                        bodies, broken = [], True
                    for body in bodies:
                        try:
                            message = decode_message(body)
                        except ProtocolError as e:
                            self._record({"conn": conn, "dir": direction, "framing_error": str(e)})
                            continue
                        if rewrite:
                            message = rewrite(message)
                            if message is None:
                                continue
                            forward.append(encode_message(message))
                        self._record({"conn": conn, "dir": direction, "t": time.time(), "msg": message})
                if forward:
                    sink.sendall(b"".join(forward))
        except OSError:
            pass
        finally:
            # One side closing ends the whole connection, as it would without the tap.
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _record(self, record: dict) -> None:
        with self._lock:
            self.records.append(record)
            if self._log is not None:
                self._log.write(json.dumps(record) + "\n")
                self._log.flush()

    def messages(self, direction: str | None = None) -> list[dict]:
        with self._lock:
            return [r["msg"] for r in self.records if "msg" in r and direction in (None, r["dir"])]

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closing = True
            sockets = list(self._sockets)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self._listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(timeout)
        for thread in self._threads:
            thread.join(timeout)
        for sock in sockets:
            sock.close()
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

"""Socket helpers the listener, the relay and the forwarder share (only what a bare interpreter has)."""

from __future__ import annotations

import _socket
import os
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 MB with its imports)
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

# What a non-blocking plain socket raises when it has nothing for us.
WOULD_BLOCK = (BlockingIOError, InterruptedError)


def would_block(tls: bool) -> tuple[type[BaseException], ...]:
    """WOULD_BLOCK, plus ssl's two for a TLS socket (ssl is imported only by whoever uses TLS)."""
    if not tls:
        return WOULD_BLOCK
    import ssl

    return WOULD_BLOCK + (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def start_service_thread(target: Callable, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    # pydevd skips threads carrying these marks: our relay must never stop at a breakpoint.
    thread.pydev_do_not_trace = True
    thread.is_pydev_daemon_thread = True
    thread.start()
    return thread


def format_peer(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def close_quietly(sock: socket.socket | _socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(_socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Waker:
    """Wakes a thread blocked in poll() or select() from another thread: ``reader`` is the
    file descriptor to watch (a non-blocking pipe)."""

    def __init__(self):
        self.reader, self._writer = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False

    def wake(self) -> None:
        try:
            os.write(self._writer, b"x")
        except OSError:
            pass  # already full (a wake-up is pending anyway) or closed

    def drain(self) -> None:
        try:
            while os.read(self.reader, 4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.reader)
            os.close(self._writer)

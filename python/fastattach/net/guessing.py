"""Guessing the secret: the listener's budget of secret checks and whom failures count against.

Split from security.py so that listening loads none of it: the listener makes its
GuessLimiter with its first connection (RSS: every line of a module loaded at listen is the
debuggee's memory before any client).
"""

from __future__ import annotations

import _socket
import threading
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable

# A few checks per second: slow for a guesser (about 170,000 a day, against a secret of 128
# random bits), and a wait of at most half a second for a client first in line.
GUESSES_PER_SECOND = 2.0
GUESS_BURST = 4


class GuessLimiter:
    """A token bucket of secret checks shared by every connection of one listener.

    A check takes a token, and a right secret gives it back: only wrong guesses use up the
    budget. While no token is left, checks wait in line, best first: the fewest recent
    failures of the waiter's principal (as they are now, not when it began to wait), then
    the earliest. A waiting connection holds only its own pending-handshake place, and gives
    up at its deadline or when told to stop.
    """

    def __init__(self, *, rate: float = GUESSES_PER_SECOND, burst: int = GUESS_BURST, clock=time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("the guess limiter needs a positive rate and a burst of at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._condition = threading.Condition(threading.Lock())
        self._waiting: dict[int, Callable[[], int]] = {}   # ticket -> its principal's failures now
        self._next_ticket = 0
        self.checks = 0    # tokens handed out, for tests and benchmarks

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def acquire(self, failures: Callable[[], int], *, deadline: float, cancelled: Callable[[], bool]) -> bool:
        """Waits for a token (True), or until `deadline` (monotonic) or `cancelled()` (False).
        `failures()` counts the recent failures of the waiter's principal."""
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._waiting[ticket] = failures
            try:
                while True:
                    now = self._clock()
                    self._refill(now)
                    first = self._tokens >= 1.0 and self._best() == ticket
                    if first:
                        self._tokens -= 1.0
                        self.checks += 1
                        return True
                    if now >= deadline or cancelled():
                        return False
                    # Woken by a returned token or a waiter leaving; else at the next token,
                    # and at least every 0.1 s to see `cancelled`.
                    until_token = (1.0 - self._tokens) / self._rate if self._tokens < 1.0 else 0.1
                    self._condition.wait(max(0.005, min(until_token, deadline - now, 0.1)))
            finally:
                del self._waiting[ticket]
                self._condition.notify_all()

    @property
    def waiting(self) -> int:
        """How many checks wait in line now."""
        with self._condition:
            return len(self._waiting)

    def _best(self) -> int:
        return min(self._waiting, key=lambda ticket: (self._waiting[ticket](), ticket))

    def give_back(self) -> None:
        """The check found the right secret: its token returns to the bucket."""
        with self._condition:
            self._refill(self._clock())
            self._tokens = min(self._burst, self._tokens + 1.0)
            self._condition.notify_all()


def peer_principal(local: tuple, peer: tuple | str) -> str:
    """Who is on the other end of a connection, for throttling: "uid N" for a loopback peer
    (the owner of its socket, as the kernel's sock_diag tells), else its address (an IPv6 one as
    its /64). The address also stands in when the kernel's table does not have the socket."""
    if not isinstance(peer, tuple):
        return str(peer)
    host = peer[0]
    if ":" in host and not host.startswith("::ffff:"):
        if host == "::1":
            uid = _loopback_peer_uid(local, peer)
            return host if uid is None else f"uid {uid}"
        return _ipv6_prefix64(host)
    plain = host[7:] if host.startswith("::ffff:") else host
    if plain.startswith("127."):
        uid = _loopback_peer_uid(local, peer)
        if uid is not None:
            return f"uid {uid}"
    return plain


def _ipv6_prefix64(host: str) -> str:
    try:
        packed = _socket.inet_pton(_socket.AF_INET6, host.split("%")[0])
    except OSError:
        return host
    return _socket.inet_ntop(_socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


# sock_diag (linux/inet_diag.h, linux/sock_diag.h): the kernel looks one socket up by its
# addresses and says who owns it, at the same cost however many sockets the machine has
# (reading /proc/net/tcp would cost more with every TIME_WAIT entry a flood leaves behind).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_ALL_TCP_STATES = 0xFFFFFFFF
_NO_COOKIE = 0xFFFFFFFF


def _packed_address(host: str, family: int) -> bytes:
    """host as the 16 bytes of inet_diag_sockid's src/dst (network byte order)."""
    if family == _socket.AF_INET:
        return _socket.inet_aton(host) + bytes(12)
    return _socket.inet_pton(_socket.AF_INET6, host.split("%")[0])


def _loopback_peer_uid(local: tuple, peer: tuple) -> int | None:
    """The uid that owns the peer's end of a loopback connection, or None if the kernel
    does not say (no sock_diag, or the peer has already closed)."""
    import struct

    family = _socket.AF_INET6 if ":" in local[0] else _socket.AF_INET
    try:
        # The peer's socket: its source is the peer, its destination is us.
        socket_id = struct.pack("!HH16s16s", peer[1], local[1], _packed_address(peer[0], family),
                                _packed_address(local[0], family)) + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
        request = struct.pack("=BBBxI", family, _socket.IPPROTO_TCP, 0, _ALL_TCP_STATES) + socket_id
        header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
        diag = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
        try:
            diag.settimeout(1.0)
            diag.send(header + request)
            reply = diag.recv(8192)
        finally:
            diag.close()
    except (OSError, ValueError, struct.error):
        return None
    # nlmsghdr (16 bytes), then inet_diag_msg: family, state, timer, retrans (4), the socket
    # id (48), expires, rqueue, wqueue (12), uid, inode.
    if len(reply) < 16 + 72 or struct.unpack_from("=H", reply, 4)[0] != _SOCK_DIAG_BY_FAMILY:
        return None
    uid, inode = struct.unpack_from("=II", reply, 16 + 64)
    # No inode: the peer has closed its socket, and what is left of it (a TIME_WAIT or
    # FIN_WAIT2 remnant) says uid 0 whoever owned it. Counting that as root's would let
    # anyone who connects and closes at once aim failures at root's clients.
    return uid if inode else None

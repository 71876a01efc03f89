"""os._exit() while a client is attached: the client hears `terminated` before the process ends.

os._exit() ends the process at once: no atexit handler, no thread runs again, so pydevd never
sends the `terminated` it sends on a normal exit, and a `continue` it had not answered yet
stays unanswered. debugpy's adapter, a process of its own, sees the connection close and
says both itself. fastattach's relay lives in the debuggee, so while a session is attached
os._exit is wrapped: it lets the relay answer and say `terminated` (bounded in time, see
relay.EXIT_FLUSH_TIMEOUT), then exits exactly as asked. pydevd's own `terminate` request
ends the process through os._exit() too.

Standard library only: listen() installs it before any client exists.
"""

from __future__ import annotations

import atexit
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 MB with its imports)
if TYPE_CHECKING:
    from collections.abc import Callable

_real_exit = os._exit            # kept for good: a caller may hold our wrapper after uninstall()
_announce: Callable[[], None] | None = None
_announcing_pid: int | None = None   # a forked child has no relay thread: it exits at once
_requested_status: int | None = None   # what os._exit() was given, while it announces


def install(announce: Callable[[], None]) -> None:
    """From now on os._exit() first calls `announce()` (in this process, not in its forks)."""
    global _announce, _announcing_pid
    _announce, _announcing_pid = announce, os.getpid()
    if os._exit is not _exit_after_announcing:
        os._exit = _exit_after_announcing
    # A normal exit too: the relay is a daemon thread of this process, and a `continue` that
    # let the program end must still be answered. Registered before pydevd is imported, so it
    # runs after pydevd's own exit handlers (atexit is last in, first out).
    atexit.unregister(_announce_at_exit)
    atexit.register(_announce_at_exit)


def uninstall() -> None:
    """os._exit is the one we found again, unless someone has wrapped ours since (theirs stays
    and reaches ours, which now exits at once)."""
    global _announce, _announcing_pid
    _announce = _announcing_pid = None
    atexit.unregister(_announce_at_exit)
    if os._exit is _exit_after_announcing:
        os._exit = _real_exit


def _announce_at_exit() -> None:
    announce = _announce
    if announce is not None and os.getpid() == _announcing_pid:
        try:
            announce()
        except BaseException:  # noqa: BLE001 (exiting never raises; the process ends whatever happened)
            pass


def exit_status() -> int | None:
    """While announcing: the status the process exits with, if it is known (os._exit's; at a
    normal exit 1 after an uncaught exception, else 0; a SystemExit's code is not kept)."""
    if _requested_status is not None:
        return _requested_status
    return 1 if getattr(sys, "last_value", None) is not None else 0


def _exit_after_announcing(status, /):
    global _requested_status
    if isinstance(status, int):
        _requested_status = status
    _announce_at_exit()
    _real_exit(status)


_exit_after_announcing.__doc__ = _real_exit.__doc__

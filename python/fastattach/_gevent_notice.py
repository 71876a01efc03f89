"""gevent: one message per client session that says what fastattach supports there.

Breakpoints inside greenlets are not supported behind the C filter, stops in a gevent
program are not reliable (docs/debugpy-compat.md, "gevent", has what was found), and
pydevd's gevent mode (GEVENT_SUPPORT=True, which debugpy's `gevent: true` launch option
sets) is hidden from pydevd (engine/seam.py, gevent_mode_hidden, says why). A client is
told so, once, in an `output` event (category "important", which editors show as a
notification) and in the log, when any of these holds:

- its attach arguments carry `gevent: true`;
- GEVENT_SUPPORT is set to a true value (pydevd's own test of it, is_true_in_env);
- gevent monkey-patches threading while the client is attached (seen through gevent's own
  notification of each patch: the `subscribers` list of zope.event, which gevent.events
  uses and gevent requires).

A client that comes once threading is patched is refused instead (net/listener.py,
REFUSAL). Nothing here may raise into the program: the subscriber runs inside its
patch_all().
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

# A thread started once gevent has patched threading is a greenlet of the starting thread,
# and the accept thread never yields to gevent's hub: a relay started now would never run.
REFUSAL = ("gevent has monkey-patched threading in this process, and fastattach cannot start a debugger "
           "session after that; attach before the program patches: run it with python -m fastattach "
           "--listen ... --wait-for-client, or call fastattach.listen() and wait_for_client() before "
           "gevent's monkey.patch_all()")

# pydevd_constants.ENV_TRUE_LOWER_VALUES: the values pydevd takes for "set".
_TRUE_VALUES = ("yes", "true", "1")
# The names gevent.monkey records a patched thread module under (gevent.monkey._state.saved).
_THREAD_MODULES = ("threading", "thread", "_thread")

NOTICE = (
    "fastattach: gevent is not supported ({reason}). The program runs as it would without a "
    "debugger, and breakpoints in its main greenlet stop; but a breakpoint inside another "
    "greenlet (gevent.spawn, or a threading.Thread that gevent's patching made one) may be "
    "verified and its line run without a stop, any stop may leave the session unanswered, "
    "pydevd's gevent mode (`gevent: true`, GEVENT_SUPPORT=True) is ignored, and a client that "
    "comes once gevent has patched threading is refused. debugpy itself stops in greenlets.\n"
)


def threading_patched() -> bool:
    """gevent has monkey-patched threading in this process (never imports gevent)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return False
    try:
        return any(monkey.is_module_patched(name) for name in _THREAD_MODULES)
    except Exception:   # a gevent without this API: nothing can be said, so nothing is
        return False


def reason_at_attach(attach_arguments: dict | None) -> str | None:
    """Why this new session must hear the notice, or None (then watch for a later patch).

    A program patched already never gets this far: its attach is refused (see
    net/listener.py, REFUSAL)."""
    if isinstance(attach_arguments, dict) and attach_arguments.get("gevent") is True:
        return "the attach configuration sets gevent: true"
    if os.environ.get("GEVENT_SUPPORT", "").lower() in _TRUE_VALUES:
        return "GEVENT_SUPPORT is set in the debugged process"
    return None


def settle_hub_settings() -> None:
    """Make gevent resolve its hub settings now, in the thread that patched threading.

    Once threading is patched, the first Condition.wait of a real thread that existed before
    (pydevd's writer, waiting for its next message) makes a gevent hub for that thread, and
    the hub's first creation in the process imports its loop module, under an import lock
    that the patch made a gevent lock too: the writer then waits for ever inside that import,
    and the client never gets the next `stopped` or response (about one session in ten). A
    hub made here resolves gevent's settings once (gevent._config keeps them), so no later hub
    imports anything. gevent makes this thread's hub at its first use anyway."""
    import gevent

    gevent.get_hub()


class PatchWatch:
    """Calls ``on_patched(reason)`` once, from the patching thread, when gevent patches threading.

    ``close()`` stops watching. Without gevent installed there is nothing to watch, and
    nothing is imported.
    """

    def __init__(self, on_patched: Callable[[str], None], *, log=None):
        self._log = log   # the caller's logger (fastattach._log's): this module imports nothing of ours
        self._on_patched = on_patched
        self._subscribers: list | None = None
        import importlib.util

        if importlib.util.find_spec("gevent") is None:
            return
        try:
            # gevent.events does `from zope.event import subscribers`: the same list, so a
            # subscriber added before gevent is imported still hears its patches.
            import zope.event
        except ImportError:   # gevent then keeps a private list (gevent/events.py)
            if self._log is not None:
                self._log.debug("fastattach: zope.event is missing; a later gevent patch goes unnoticed")
            return
        self._subscribers = zope.event.subscribers
        self._subscribers.append(self._subscriber)

    def _subscriber(self, event) -> None:
        try:
            if type(event).__name__ != "GeventDidPatchModuleEvent":
                return
            if getattr(event, "module_name", None) not in _THREAD_MODULES:
                return
            self.close()
            self._on_patched("gevent has monkey-patched threading in this process")
        except Exception:   # it runs inside the program's patch_all(): never raise there
            if self._log is not None:
                self._log.exception("fastattach: the gevent patch watch failed")

    def close(self) -> None:
        subscribers, self._subscribers = self._subscribers, None
        if subscribers is not None:
            try:
                subscribers.remove(self._subscriber)
            except ValueError:
                pass

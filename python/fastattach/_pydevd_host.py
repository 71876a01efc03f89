"""Starts debugpy's pydevd inside this process on demand, and stops it completely.

pydevd speaks DAP itself (debugpy's "in-process adapter" mode), so no adapter
subprocess is spawned.  It is never given a port of its own: each client session gets
one end of a fresh socketpair, and our listener relays the authenticated client to the
other end.  Nothing is imported before the first client arrives.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import sys
import threading

from . import _gate

log = logging.getLogger("fastattach")

_lock = threading.RLock()
_gate_installed: _gate.Gate | None = None
_started = False
_log_dir: str | None = None
# pydevd's end of the current session's socketpair: pydevd does not close it when it
# drops a connection, so we do, when the next session starts or at shutdown.
_pydevd_end: socket.socket | None = None


def set_log_dir(path: str | None) -> None:
    """Where debugpy and pydevd write their logs once they start (debugpy's --log-to)."""
    global _log_dir
    _log_dir = path


def is_started() -> bool:
    return _started


def gate() -> _gate.Gate | None:
    return _gate_installed


def _start_pydevd():
    """Create pydevd's PyDB with tracing on but no network, and put our gate in front of it."""
    global _started, _gate_installed
    import debugpy
    import debugpy.server.api as debugpy_api  # imports force_pydevd: the vendored pydevd wins
    import pydevd

    stop_pinning_threads()

    if _log_dir is not None:
        os.makedirs(_log_dir, exist_ok=True)
        if not debugpy_api.ensure_logging.ensured:
            debugpy.log_to(_log_dir)
    debugpy_api.ensure_logging()

    hidden_paths = tuple(
        os.path.dirname(os.path.abspath(module.__file__)) for module in (debugpy, sys.modules[__package__])
    )
    # With block_until_connected=False, pydevd would open its own listening socket for
    # the client; we hand it sockets ourselves instead.
    py_db_class = pydevd.PyDB
    original = py_db_class.create_wait_for_connection_thread
    py_db_class.create_wait_for_connection_thread = lambda self: None
    try:
        pydevd.settrace(
            host="127.0.0.1",
            port=0,
            suspend=False,
            wait_for_ready_to_run=False,
            block_until_connected=False,
            patch_multiprocessing=False,
            notify_stdin=False,
            dont_trace_start_patterns=hidden_paths,
            dont_trace_end_patterns=("debugpy_launcher.py",),
        )
    finally:
        py_db_class.create_wait_for_connection_thread = original
    py_db = _global_debugger()
    _fill_command_queues_atomically(py_db)
    _gate_installed = _gate.install(py_db)
    _started = True
    return py_db


class AtomicDefaultDict(dict):
    """A defaultdict whose missing keys are filled atomically: every caller of ``d[key]``
    gets the same value, however threads interleave.

    collections.defaultdict calls the factory and then stores its result; with a factory
    written in Python (queue.Queue, threading.Event) another thread can run in between, so
    two threads asking for the same new key can get different objects, and the one stored
    first is lost. pydevd keeps each thread's command queue and wake-up event that way: a
    thread that stops makes its queue while the reader thread, handling the client's first
    request for that thread (an evaluate), makes another, so the request goes into a queue
    nobody reads and is never answered. We saw it about once in 100 attach sessions on a
    busy target on 3.13 while the switch interval was short (safe_attach_loader.
    prompt_gil_handoffs), which makes such interleavings likely."""

    def __init__(self, default_factory, items=()):
        super().__init__(items)
        self.default_factory = default_factory

    def __missing__(self, key):
        # dict.setdefault is one step under the GIL: whoever stores first, everyone gets that.
        return self.setdefault(key, self.default_factory())


def _fill_command_queues_atomically(py_db) -> None:
    import collections

    for name in ("_cmd_queue", "_thread_events"):
        table = getattr(py_db, name, None)
        if isinstance(table, collections.defaultdict):
            # No thread holds a queue yet: threads take theirs when they stop, which needs a client.
            setattr(py_db, name, AtomicDefaultDict(table.default_factory, table))
        else:
            log.warning("fastattach: pydevd's PyDB.%s is not a defaultdict (%r); left as it is", name, type(table))


def stop_pinning_threads() -> None:
    """Make pydevd's thread ids from a counter, so that it stops keeping every thread it has
    seen alive.

    pydevd names a thread "pid_<pid>_id_<id(thread)>" and, so that id() is never reused,
    keeps each Thread forever in pydevd_constants._thread_id_to_thread_found: ~3 KB and 30
    allocations per thread (its additional_info, its Event and Condition, the id string).
    A server that starts short-lived threads grew +0.5 MB/min in the 10-minute soak for this
    alone. Ids from a counter are just as unique and never reused, and nothing in pydevd
    parses them (it builds them here and compares them whole). Process-wide and permanent:
    ids already handed out stay valid. Left alone, with a warning, if pydevd changed."""
    from _pydevd_bundle import pydevd_constants as constants

    current = getattr(constants, "_get_or_compute_thread_id_with_lock", None)
    if getattr(current, "_fastattach", False):
        return
    if current is None or not hasattr(constants, "_thread_id_lock") or not hasattr(constants, "get_pid"):
        log.warning("fastattach: pydevd's thread ids are not where debugpy 1.8.22 keeps them; "
                    "pydevd will keep every thread it sees alive")
        return
    counter = itertools.count(1)

    def _get_or_compute_thread_id_with_lock(thread, is_current_thread):
        with constants._thread_id_lock:
            tid = getattr(thread, "__pydevd_id__", None)
            if tid is not None:
                return tid
            tid = f"pid_{constants.get_pid()}_fa_{next(counter)}"
            thread.__pydevd_id__ = tid
        return tid

    _get_or_compute_thread_id_with_lock._fastattach = True
    constants._get_or_compute_thread_id_with_lock = _get_or_compute_thread_id_with_lock


def _global_debugger():
    from _pydevd_bundle.pydevd_constants import get_global_debugger

    return get_global_debugger()


def open_session() -> socket.socket:
    """Our end of a new DAP connection served by pydevd (started on the first call)."""
    global _pydevd_end
    with _lock:
        py_db = _start_pydevd() if not _started else _global_debugger()
        ours, theirs = socket.socketpair()
        if getattr(py_db, "reader", None) is not None:
            # What pydevd itself does when a client reconnects without a clean disconnect.
            from _pydevd_bundle.pydevd_api import PyDevdAPI

            PyDevdAPI().request_disconnect(py_db, resume_threads=False)
        py_db.initialize_network(theirs, terminate_on_socket_close=False)
        _close_pydevd_end()
        _pydevd_end = theirs
        return ours


def _close_pydevd_end() -> None:
    global _pydevd_end
    if _pydevd_end is not None:
        _pydevd_end.close()
        _pydevd_end = None


def take_filter_error():
    """The first exception a trampoline swallowed since the last call, or None."""
    return _gate_installed.tracer.take_error() if _gate_installed is not None else None


def shutdown() -> None:
    """Stop pydevd and remove every sys.monitoring callback and event it and we registered."""
    global _started, _gate_installed
    with _lock:
        if not _started:
            return
        import pydevd
        from _pydevd_bundle.pydevd_constants import set_global_debugger

        gate = _gate_installed
        armed = gate.armed_codes() if gate is not None else []
        if gate is not None:
            gate.uninstall()
            error = gate.tracer.take_error()
            if error is not None:
                log.warning("fastattach: the breakpoint filter swallowed an error: %r", error)
        _gate.clear_tool(_gate.DEBUGGER_ID, armed)
        try:
            pydevd.stoptrace()
        except Exception:
            log.exception("fastattach: pydevd.stoptrace() failed")
        # stoptrace frees the tool only if pydevd still owned it; make sure nothing is left.
        _gate.clear_tool(_gate.DEBUGGER_ID, armed)
        _gate.forget_pydevd_code_cache()
        _close_pydevd_end()
        set_global_debugger(None)
        _gate_installed = None
        _started = False
        if gate is not None:
            from . import _fasttrace, _requicken

            _requicken.requicken(_fasttrace.seen_by_filter)

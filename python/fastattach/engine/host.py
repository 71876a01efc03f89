"""Starts debugpy's pydevd inside this process on demand, and stops it completely.

pydevd speaks DAP itself (debugpy's "in-process adapter" mode), so no adapter
subprocess is spawned. It is never given a port of its own: each client session gets
one end of a fresh socketpair, and our listener relays the authenticated client to the
other end. Nothing is imported before the first client arrives.

``PydevdHost`` owns one pydevd and everything put in front of it (the seam's patches,
the gate's trampolines, the budget supervisor). Start-up is ``open_session`` and
teardown is ``close``, each in one method, in order.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

from .. import _fasttrace
from .._log import logger as log
from . import seam as seam_module
from . import superinstructions
from .budgets import BudgetSupervisor
from .gate import DEBUGGER_ID, Gate, clear_tool


class DebuggerToolTaken(RuntimeError):
    """Another tool holds sys.monitoring's debugger tool id, which pydevd cannot do without."""


def check_debugger_tool_free() -> None:
    """Raise DebuggerToolTaken, naming the holder, if another tool owns tool id 0 (AWS's and
    Datadog's live debuggers take it; so may coverage or a profiler). pydevd would take it over
    regardless, re-pointing that tool's events; so it is not started and the tool is left alone."""
    holder = sys.monitoring.get_tool(DEBUGGER_ID)
    if holder is not None and holder != "pydevd":
        raise DebuggerToolTaken(
            f"sys.monitoring's debugger tool id {DEBUGGER_ID} is held by {holder!r} in this process; "
            f"the debugger needs that id, so it was not started and {holder!r} is left as it was: "
            f"turn that tool off to debug with fastattach")


class PydevdHost:
    """One pydevd in this process, serving the session's clients one after another.

    ``options`` is the session's options snapshot (see _options.py); ``notify(event, body)``
    sends an event to the attached client, if any.
    """

    def __init__(self, options: dict, notify):
        self.options = options
        self._notify = notify
        self._lock = threading.RLock()
        self.py_db = None
        self.seam: seam_module.Seam | None = None
        self.gate: Gate | None = None          # None until started, or when the filter could not go in
        self.budgets: BudgetSupervisor | None = None
        # pydevd's end of the current session's socketpair: pydevd does not close it when it
        # drops a connection, so we do, when the next session starts or at close().
        self._pydevd_end: socket.socket | None = None
        self._gevent_watch = None   # while the filter is in: see _gevent_patched

    @property
    def started(self) -> bool:
        return self.py_db is not None

    def options_changed(self, options: dict) -> None:
        self.options = options
        budgets = self.budgets
        if budgets is not None:
            budgets.reload(options)

    def open_session(self) -> socket.socket:
        """Our end of a new DAP connection served by pydevd (started on the first call)."""
        with self._lock:
            if self.py_db is None:
                check_debugger_tool_free()
                self._start()
            py_db = self.py_db
            ours, theirs = socket.socketpair()
            if getattr(py_db, "reader", None) is not None:
                # What pydevd itself does when a client reconnects without a clean disconnect.
                from _pydevd_bundle.pydevd_api import PyDevdAPI

                PyDevdAPI().request_disconnect(py_db, resume_threads=False)
            py_db.initialize_network(theirs, terminate_on_socket_close=False)
            self._close_pydevd_end()
            self._pydevd_end = theirs
            return ours

    def session_over(self) -> None:
        """What pydevd does on a disconnect, unless it already did: resume every suspended thread,
        clear every breakpoint. A session that died (pydevd's reader gone, its stream broken,
        the client vanished) must not leave a thread stopped until some later client continues it."""
        with self._lock:
            py_db = self.py_db
            if py_db is None:
                return
            suspended = seam_module.suspended_threads()
            if not suspended and not seam_module.has_breakpoints(py_db):
                return
            from _pydevd_bundle.pydevd_api import PyDevdAPI

            log.warning("fastattach: the session ended without pydevd's disconnect; resuming %d suspended "
                        "thread(s) and clearing the breakpoints", len(suspended))
            py_db.enable_output_redirection(False, False)
            PyDevdAPI().request_disconnect(py_db, resume_threads=True)

    def break_at(self, frame) -> None:
        """Stop this thread at the next line `frame` runs; nothing in production mode."""
        if self.py_db is not None and not self.options["production"]:
            seam_module.suspend_at(frame)

    def trace_this_thread(self, should_trace: bool) -> None:
        """debugpy's trace_this_thread(), which calls pydevd in the same way."""
        py_db = self.py_db
        if py_db is None:
            return
        if should_trace:
            py_db.enable_tracing()
        else:
            py_db.disable_tracing()

    def debug_this_thread(self) -> None:
        """debugpy's debug_this_thread(): pydevd.settrace() from this thread, which, pydevd
        being set up already, only starts tracing this thread (no connection is made)."""
        if self.py_db is None:
            return
        import pydevd

        pydevd.settrace(host="127.0.0.1", port=0, suspend=False, wait_for_ready_to_run=False,
                        block_until_connected=False, patch_multiprocessing=False, notify_stdin=False)

    # -- start-up ------------------------------------------------------------------------
    def _start(self) -> None:
        """Create pydevd's PyDB with tracing on but no network, and put the filter in front of it."""
        # pydevd's frozen-modules warning is noise in a service's stderr; with verbose logging
        # on (log_dir, --log-to, or debugpy's DEBUGPY_LOG_DIR) it is printed as pydevd prints it.
        verbose = self.options["log_dir"] is not None or "DEBUGPY_LOG_DIR" in os.environ
        with contextlib.nullcontext() if verbose else seam_module.frozen_modules_warning_to_log(), \
                seam_module.gevent_mode_hidden():
            import debugpy
            import debugpy.server.api as debugpy_api  # imports force_pydevd: the vendored pydevd wins
            import pydevd
        from _pydevd_bundle.pydevd_constants import get_global_debugger

        seam = self.seam = seam_module.Seam()
        missing = seam_module.missing_features()
        if not missing:
            seam.install_thread_ids()
        log_dir = self.options["log_dir"]
        if log_dir is not None:
            os.makedirs(log_dir, exist_ok=True)
            if not debugpy_api.ensure_logging.ensured:
                debugpy_api.log_to(log_dir)   # not debugpy.log_to: _debugpy_shim.py may make it ours
        if self.options["log_to_stderr"] and not debugpy_api.ensure_logging.ensured:
            debugpy_api.log_to(sys.stderr)
        debugpy_api.ensure_logging()
        hidden_paths = tuple(
            os.path.dirname(os.path.abspath(module.__file__))
            for module in (debugpy, sys.modules[__package__.rpartition(".")[0]])
        )
        with seam_module.no_connection_thread(pydevd.PyDB):
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
        py_db = self.py_db = get_global_debugger()
        missing = missing or seam_module.missing_features(py_db)
        if missing:
            seam.undo()
            log.warning("fastattach: breakpoint filter not installed: this pydevd lacks %s; pydevd runs "
                        "unmodified and slower", ", ".join(missing))
            return
        seam.install_atomic_command_tables(py_db)
        try:
            self._install_filter(py_db, seam)
        except Exception as exc:
            self._remove_filter()
            seam.undo()
            log.warning("fastattach: breakpoint filter not installed (%s); pydevd runs unmodified and slower", exc)

    def _install_filter(self, py_db, seam: seam_module.Seam) -> None:
        gate = self.gate = Gate(py_db)
        budgets = self.budgets = BudgetSupervisor(py_db, gate.tracer, self.options, self._notify)
        gate.budgets = budgets
        gate.tracer.set_hooks(budgets.probe, budgets.on_trip)
        seam.install_breakpoint_hooks(py_db, gate.breakpoints_changed)
        seam.install_condition_timing(py_db, budgets.lookup, budgets.charge)
        seam.install_suspend_guard(py_db, lambda: self.options["production"])
        seam.install_monitor(gate.proxy)
        seam.verify(gate.proxy, gate.is_trampoline)
        from .._gevent_notice import PatchWatch  # RSS: loaded with pydevd, not before a client

        self._gevent_watch = PatchWatch(lambda reason: self._gevent_patched(seam), log=log)

    def _gevent_patched(self, seam: seam_module.Seam) -> None:
        """From the thread gevent patches in, right after the patch: pydevd's threads can
        still wait (see _gevent_notice.settle_hub_settings)."""
        from .._gevent_notice import settle_hub_settings  # RSS: as above

        with self._lock:
            if self.seam is seam:   # not closed meanwhile
                settle_hub_settings()

    def _remove_filter(self) -> list:
        """Turn the trampolines into forwarders and stop the budgets; the codes tool 0 armed."""
        gate, budgets = self.gate, self.budgets
        self.gate = self.budgets = None
        self._close_gevent_watch()
        if gate is None:
            return []
        armed = gate.armed_codes()
        gate.tracer.close()   # trampolines pydevd still holds forward everything from now on
        if budgets is not None:
            gate.tracer.set_hooks(None, None)
            budgets.close()
        error = gate.tracer.take_error()
        if error is not None:
            log.warning("fastattach: the breakpoint filter swallowed an error: %r", error)
        return armed

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop pydevd and remove every sys.monitoring callback and event it and we registered.

        The order, as _lsprof's profiler_disable: the trampolines stop filtering and the budget
        thread ends; every patch to pydevd is undone (its ``monitor`` is sys.monitoring again);
        tool 0 loses its callbacks and events (before and after pydevd.stoptrace(): stoptrace
        frees the tool only if pydevd still owned it); pydevd's per-code cache is emptied; its
        socket is closed; and on 3.12, code the filter saw gets its superinstructions back.
        """
        with self._lock:
            if self.py_db is None:
                return
            import pydevd
            from _pydevd_bundle.pydevd_constants import set_global_debugger

            had_filter = self.gate is not None
            armed = self._remove_filter()
            self.seam.undo()
            clear_tool(DEBUGGER_ID, armed)
            try:
                pydevd.stoptrace()
            except Exception:
                log.exception("fastattach: pydevd.stoptrace() failed")
            clear_tool(DEBUGGER_ID, armed)
            seam_module.forget_code_cache()
            self._close_pydevd_end()
            set_global_debugger(None)
            self.py_db = self.seam = None
            if had_filter:
                superinstructions.requicken(_fasttrace.seen_by_filter)

    def abandon_after_fork(self) -> None:
        """In a forked child: drop the parent's pydevd and our filter, waiting on nothing.

        Only the forking thread survived: pydevd's reader and writer, the budget supervisor
        and any thread held at a breakpoint are gone, and any lock one of them held stays
        held. So nothing here joins, locks or talks to pydevd: sys.monitoring loses every
        event and callback of ours and pydevd's first (the child runs at full speed from
        here), then the seam's patches are undone and pydevd is reset as its own fork
        handling does (seam.reset_pydevd_after_fork). The parent's session is untouched:
        sockets are the only thing shared, and ours are just closed."""
        self._lock = threading.RLock()
        self._close_gevent_watch()
        gate = self.gate
        armed = gate.armed_codes() if gate is not None else []
        clear_tool(DEBUGGER_ID, armed)
        self.gate = self.budgets = None
        if gate is not None:
            gate.tracer.set_hooks(None, None)
            gate.tracer.close()
        if self.seam is not None:
            self.seam.undo()
        clear_tool(DEBUGGER_ID, armed)   # in case an undone patch re-armed anything
        if self.py_db is not None:
            seam_module.reset_pydevd_after_fork(self.py_db)
        if self._pydevd_end is not None:
            self._pydevd_end.close()      # no shutdown(): the parent's pydevd reads its copy
            self._pydevd_end = None
        self.py_db = self.seam = None
        if gate is not None:
            superinstructions.requicken(_fasttrace.seen_by_filter)

    def _close_pydevd_end(self) -> None:
        if self._pydevd_end is not None:
            self._pydevd_end.close()
            self._pydevd_end = None

    def _close_gevent_watch(self) -> None:
        watch, self._gevent_watch = self._gevent_watch, None
        if watch is not None:
            watch.close()

"""The C trampolines in front of pydevd's sys.monitoring callbacks, and what they ask Python.

Every sys.monitoring call pydevd makes goes through one module global, ``monitor``, of
its monitoring implementation module (see DESIGN.md, "The seam to debugpy"). seam.py
replaces it with the ``_MonitorProxy`` here, which wraps pydevd's PY_START / LINE / JUMP
callbacks in ``_fasttrace`` trampolines. pydevd keeps every semantic; the trampolines only
answer "nothing to do here" in C, from decisions ``Gate`` computes once per code object.
This module knows nothing of budgets, production mode or the network.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

try:
    from .. import _fasttrace
except ImportError as exc:  # pragma: no cover - a packaging error, not a runtime state
    raise ImportError(
        "fastattach._fasttrace (the C extension) is not built; "
        "install fastattach with `pip install .` or run scripts/bootstrap.sh"
    ) from exc
from . import superinstructions

_STATE_SUSPEND = 2  # pydevd_constants.STATE_SUSPEND

_monitoring = sys.monitoring
_events = _monitoring.events
DEBUGGER_ID = _monitoring.DEBUGGER_ID
_TRAMPOLINE_KINDS = {
    _events.PY_START: _fasttrace.PY_START,
    _events.LINE: _fasttrace.LINE,
    _events.JUMP: _fasttrace.JUMP,
}


# pydevd arms these with callbacks it may never register: PY_RESUME globally with PY_START
# (its PY_RESUME callback is commented out in 1.8.22) and JUMP locally with LINE (no JUMP
# callback on 3.13).  An event with no callback can never be DISABLEd, so each one would tax
# every generator resume or every loop's backward jump in breakpoint code, with nobody
# listening.  Other events are passed as pydevd sets them.
_ARMED_WITHOUT_CALLBACK = _events.JUMP | _events.PY_RESUME


class _MonitorProxy:
    """Stands in for sys.monitoring inside pydevd's monitoring module."""

    def __init__(self, gate: Gate):
        self._gate = gate

    def __getattr__(self, name):
        return getattr(_monitoring, name)

    def register_callback(self, tool_id, event, func):
        gate = self._gate
        if tool_id == DEBUGGER_ID and event & _ARMED_WITHOUT_CALLBACK:
            if func is None:
                gate.unheard_events |= event
            else:
                gate.unheard_events &= ~event
        if tool_id == DEBUGGER_ID and func is not None and event in _TRAMPOLINE_KINDS:
            func = gate.trampoline_for(event, func)
        gate.tracer.enter_slow()
        return _monitoring.register_callback(tool_id, event, func)

    def set_events(self, tool_id, event_set):
        # pydevd changes global events on every stop, pause and breakpoint change.
        self._gate.tracer.enter_slow()
        if tool_id == DEBUGGER_ID:
            event_set &= ~self._gate.unheard_events
        return _monitoring.set_events(tool_id, event_set)

    def set_local_events(self, tool_id, code, event_set):
        if tool_id == DEBUGGER_ID:
            event_set &= ~self._gate.unheard_events
            self._gate.note_local_events(code, event_set)
        return _monitoring.set_local_events(tool_id, code, event_set)

    def restart_events(self):
        self._gate.tracer.enter_slow()
        return _monitoring.restart_events()


class Gate:
    """The trampolines of one pydevd instance, the decisions they cache, and what tool 0 armed."""

    def __init__(self, py_db):
        self.py_db = py_db
        self.tracer = _fasttrace.Tracer(_monitoring.DISABLE, self._compute, self._need_slow)
        if superinstructions.NEEDED:
            _fasttrace.set_superinstruction_table(*superinstructions.superinstruction_table())
        self.proxy = _MonitorProxy(self)
        # Events pydevd arms while no callback of its own listens for them (see
        # _ARMED_WITHOUT_CALLBACK); the proxy leaves them out.
        self.unheard_events = _ARMED_WITHOUT_CALLBACK
        self._armed_codes: weakref.WeakSet = weakref.WeakSet()  # tool 0 has local events there
        self._compiled_conditions: dict[str, object] = {}
        # One trampoline per (event, pydevd callback), so pydevd re-registering a callback,
        # which it does from inside a running one, gets back the trampoline already running.
        self._trampolines: dict[tuple[int, object], object] = {}
        self.budgets = None   # budgets.BudgetSupervisor, set by whoever made the gate

    def breakpoints_changed(self) -> None:
        """pydevd invalidated its caches: so do we, and forward everything until we know again."""
        self.tracer.breakpoints_changed()
        self.tracer.enter_slow()

    def trampoline_for(self, event: int, callback):
        key = (event, callback)
        trampoline = self._trampolines.get(key)
        if trampoline is None:
            trampoline = self._trampolines[key] = self.tracer.trampoline(_TRAMPOLINE_KINDS[event], callback)
        return trampoline

    @staticmethod
    def is_trampoline(callback) -> bool:
        return type(callback) is _fasttrace.Trampoline

    # -- bookkeeping for teardown -------------------------------------------------
    def note_local_events(self, code, event_set: int) -> None:
        self.tracer.note_local_events(code, bool(event_set & _events.LINE))
        if event_set:
            self._armed_codes.add(code)
        else:
            self._armed_codes.discard(code)

    def armed_codes(self) -> list:
        return list(self._armed_codes)

    # -- decisions the C cache keeps (called from inside monitoring callbacks) ------
    def _compute(self, code):
        """None, or (function_bp, entries) for code: one entry per breakpoint line in it,
        (line, compiled condition for C or None) or, with budgets, (line, condition, Budget or
        None). src/_fasttrace.c reads this shape (ft_codeinfo_load)."""
        py_db = self.py_db
        function_bp = code.co_name in py_db.function_breakpoint_name_to_breakpoint
        canonical = None
        file_breakpoints = None
        if py_db.breakpoints:
            canonical = _canonical_filename(code.co_filename, list(py_db.breakpoints))
            if canonical is not None:
                file_breakpoints = py_db.breakpoints.get(canonical)
        entries = ()
        if file_breakpoints:
            code_lines = {line for _, _, line in code.co_lines() if line is not None}
            budgets = self.budgets
            entries = tuple(
                (line, self._filter_condition(bp)) if budgets is None
                else (line, *budgets.entry(bp, canonical, self._filter_condition(bp)))
                for line, bp in list(file_breakpoints.items()) if line in code_lines
            )
        if not entries and not function_bp:
            return None
        return (function_bp, entries)

    def _filter_condition(self, bp):
        """A compiled condition C may evaluate to skip pydevd, or None to always forward.

        Only plain conditions qualify: hit conditions count hits and logpoints print,
        and both of those are pydevd's job on every hit.
        """
        condition = bp.condition
        if not condition or bp.hit_condition or bp.is_logpoint or bp.expression is not None:
            return None
        compiled = self._compiled_conditions.get(condition)
        if compiled is None:
            from . import conditions  # RSS: a session without conditions never loads it

            try:
                compiled = conditions.compile_condition(condition, "<breakpoint condition>")
            except (SyntaxError, ValueError):
                return None  # pydevd evaluates it and reports the error to the client
            self._compiled_conditions[condition] = compiled
        return compiled

    def _need_slow(self) -> bool:
        """The same test as pydevd's update_monitor_events: is any thread stepping or suspended?

        It runs inside monitoring callbacks, so it takes no lock (threading.enumerate()
        would wait for threading's registry lock while another thread starts or ends):
        the registry is copied in one C-level call, which the GIL keeps consistent.
        """
        if self.py_db.has_plugin_line_breaks:
            return True
        for thread in list(threading._active.values()):
            info = getattr(thread, "additional_info", None)
            if info is not None and (info.pydev_step_cmd != -1 or info.pydev_state == _STATE_SUSPEND):
                return True
        return False


def _canonical_filename(filename: str, breakpoint_files) -> str | None:
    """pydevd's canonical form of filename, which keys its breakpoints; None when filename
    cannot be one of breakpoint_files, decided without asking pydevd.

    Template engines, notebooks and code generators compile code under a fresh file name
    each time. pydevd's path functions keep every name they are asked about, and its
    normalised forms, in caches that are never emptied (NORM_PATHS_CONTAINER,
    NORM_PATHS_AND_BASE_CONTAINER, normcase's NORMCASE_CACHE), so asking about each new code
    object grew the debuggee's memory with every fresh name (issue 12, point 9). pydevd's
    canonical name differs from filename in its directories (absolute, symlinks resolved)
    but keeps its base name, unless the file itself is a symlink: a name whose base name no
    breakpoint file has, and that is no symlink, has no breakpoint. That costs one lstat for
    each new code object under a new name; the C cache keeps the answer per code object.
    """
    import pydevd_file_utils

    known = pydevd_file_utils.NORM_PATHS_AND_BASE_CONTAINER.get(filename)
    if known is not None:
        return known[1]
    # The same spelling pydevd gives the name before normalising it (see
    # pydevd_file_utils.get_abs_path_real_path_and_base_from_file), and the same case rule.
    spelled = filename or "<string>"
    if spelled.endswith(".pyc"):
        spelled = spelled[:-1]
    elif spelled.endswith("$py.class"):
        spelled = spelled[:-len("$py.class")] + ".py"
    normcase = getattr(pydevd_file_utils, "_default_normcase", os.path.normcase)   # uncached
    base = normcase(os.path.basename(spelled))
    if all(normcase(os.path.basename(known_file)) != base for known_file in breakpoint_files):
        if spelled.startswith("<"):
            return None   # pydevd does not resolve these: the name is the canonical name
        try:
            if not os.path.islink(spelled):
                return None
        except (OSError, ValueError):
            return None   # a NUL in the name: no file, so no breakpoint either
    return pydevd_file_utils.get_abs_path_real_path_and_base_from_file(filename)[1]


def clear_tool(tool_id: int, armed_codes=()) -> None:
    """Remove every callback and event of tool_id, then free it.

    The order follows _lsprof's profiler_disable.  On 3.12 and 3.13 free_tool_id leaves
    local events set (see coverage.py's note on gh-111963), so they are cleared first.
    """
    if _monitoring.get_tool(tool_id) is None:
        return
    for name in dir(_events):
        event = getattr(_events, name)
        if isinstance(event, int) and event and event & (event - 1) == 0:
            try:
                _monitoring.register_callback(tool_id, event, None)
            except ValueError:
                pass  # an event that has no callback slot of its own
    _monitoring.set_events(tool_id, 0)
    for code in armed_codes:
        _monitoring.set_local_events(tool_id, code, 0)
    _monitoring.free_tool_id(tool_id)

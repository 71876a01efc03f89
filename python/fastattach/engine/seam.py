"""Every change fastattach makes to pydevd, each with its undo, behind one feature check.

A debugpy upgrade starts here: this file names every pydevd internal we replace or wrap.
``missing_features`` decides at run time, from what the installed pydevd offers, whether
the breakpoint filter can be put in front of it (there is no version pin). On a mismatch
pydevd runs unmodified, slower and never broken, and one warning names what was missing.

What we rely on, all checked by ``missing_features``:
- the ``monitor`` global through which pydevd's monitoring module makes every
  sys.monitoring call (DESIGN.md, "The seam to debugpy"), and that module's
  ``start_monitoring``/``update_monitor_events``/``restart_events`` and per-code cache;
- pydevd's callbacks for PY_START (code, offset), LINE (code, line) and JUMP (code, from,
  to). The pure-Python module shows them as ``_start_method_event``, ``_line_event`` and
  ``_jump_event``; the Cython module keeps them in C, so ``Seam.verify`` reads back what
  it registered instead;
- the PyDB methods we wrap (``on_breakpoints_changed``, ``_clear_caches``,
  ``handle_breakpoint_condition``, ``set_suspend``, ``do_wait_suspend``) and the one we
  suppress while pydevd starts (``create_wait_for_connection_thread``);
- the thread-id function of ``pydevd_constants`` and the ``_cmd_queue``/``_thread_events``
  defaultdicts of PyDB.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import sys
import threading
import time

from .._log import logger as log

# The Cython module is the default; the pure-Python one runs with PYDEVD_USE_CYTHON=NO.
MONITORING_MODULE_NAMES = (
    "_pydevd_sys_monitoring._pydevd_sys_monitoring_cython",
    "_pydevd_sys_monitoring._pydevd_sys_monitoring",
)
SELECTOR_MODULE_NAME = "_pydevd_sys_monitoring.pydevd_sys_monitoring"
WRAPPED_PYDB_METHODS = ("on_breakpoints_changed", "_clear_caches", "handle_breakpoint_condition", "set_suspend",
                        "do_wait_suspend")
# The pure-Python callbacks and the positional parameters sys.monitoring passes them.
PYTHON_CALLBACKS = {"_start_method_event": 2, "_line_event": 2, "_jump_event": 3}
COMMAND_TABLES = ("_cmd_queue", "_thread_events")
_STATE_RUN = 1  # pydevd_constants.STATE_RUN
# Thread ids for every session of the process (Seam.install_thread_ids): never reset.
_THREAD_ID_COUNTER = itertools.count(1)


class SeamMismatch(RuntimeError):
    """The installed pydevd lacks something the filter needs; pydevd runs unmodified."""


def monitoring_modules() -> list:
    """pydevd's loaded monitoring implementations (one or both)."""
    return [module for name in MONITORING_MODULE_NAMES if (module := sys.modules.get(name)) is not None]


def missing_features(py_db=None) -> list[str]:
    """What the filter needs and this pydevd lacks, each named for the warning; [] if nothing.

    Without ``py_db`` only what exists before pydevd starts is checked (modules, classes);
    with it, also what PyDB makes in its constructor.
    """
    import pydevd
    from _pydevd_bundle import pydevd_constants

    missing = []
    selector = sys.modules.get(SELECTOR_MODULE_NAME)
    if selector is None:
        return [f"the module {SELECTOR_MODULE_NAME}"]
    for name in ("start_monitoring", "update_monitor_events", "restart_events"):
        if not callable(getattr(selector, name, None)):
            missing.append(f"{SELECTOR_MODULE_NAME}.{name}")
    modules = monitoring_modules()
    if not any(getattr(module, "start_monitoring", None) is getattr(selector, "start_monitoring", False)
               for module in modules):
        missing.append(f"the monitoring module {SELECTOR_MODULE_NAME} selects (one of "
                       f"{', '.join(MONITORING_MODULE_NAMES)})")
    for module in modules:
        if not hasattr(module, "monitor"):
            missing.append(f"{module.__name__}.monitor")
        elif module.monitor is not sys.monitoring:
            missing.append(f"{module.__name__}.monitor being sys.monitoring (it is {type(module.monitor).__name__})")
        if not isinstance(getattr(module, "_code_to_func_code_info_cache", None), dict):
            missing.append(f"{module.__name__}._code_to_func_code_info_cache")
        if module.__name__ == MONITORING_MODULE_NAMES[1]:
            for name, arity in PYTHON_CALLBACKS.items():
                code = getattr(getattr(module, name, None), "__code__", None)
                if code is None or code.co_argcount != arity:
                    missing.append(f"{module.__name__}.{name} taking {arity} arguments")
    for name in (*WRAPPED_PYDB_METHODS, "create_wait_for_connection_thread"):
        if not callable(getattr(pydevd.PyDB, name, None)):
            missing.append(f"pydevd.PyDB.{name}")
    for name in ("_get_or_compute_thread_id_with_lock", "_thread_id_lock", "get_pid"):
        if not hasattr(pydevd_constants, name):
            missing.append(f"pydevd_constants.{name}")
    if py_db is not None:
        for name in COMMAND_TABLES:
            if not isinstance(getattr(py_db, name, None), collections.defaultdict):
                missing.append(f"PyDB.{name} as a defaultdict")
    return missing


# The lines pydevd_file_utils prints with pydev_log.critical when it is imported on a Python
# whose stdlib is frozen (run without -Xfrozen_modules=off). Matched by their start, so that
# a reworded tail still goes to the log; any other critical line still goes to stderr.
FROZEN_MODULES_WARNING_STARTS = (
    "Debugger warning: It seems that frozen modules are being used",
    "make the debugger miss breakpoints. Please pass -Xfrozen_modules=off",
    "to python to disable frozen modules.",
    "Note: Debugging will proceed. Set PYDEVD_DISABLE_FILE_VALIDATION=1",
)
_FILE_UTILS_MODULE = "pydevd_file_utils"


class _WarningDivertingLoader:
    """pydevd_file_utils's own loader, except that while the module runs, pydev_log.critical
    sends the frozen-modules warning to the fastattach logger instead of stderr."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):   # get_source, is_package, ...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            # Imported by the module about to run anyway, and with the same sys.path.
            from _pydev_bundle import pydev_log
            original = pydev_log.critical
        except Exception:   # an unexpected pydevd: it prints as it always did
            self._loader.exec_module(module)
            return

        def critical(msg, *args):
            if isinstance(msg, str) and msg.startswith(FROZEN_MODULES_WARNING_STARTS):
                log.info("pydevd: %s", msg % args if args else msg)
            else:
                original(msg, *args)

        pydev_log.critical = critical
        try:
            self._loader.exec_module(module)
        finally:
            if pydev_log.critical is critical:
                pydev_log.critical = original


class _FrozenModulesWarningToLog:
    """A sys.meta_path finder that only wraps the loader of pydevd_file_utils (see above).

    pydev_log itself cannot be imported earlier to patch it: pydevd_constants, which it
    imports, reads environment variables that debugpy's force_pydevd sets first."""

    def find_spec(self, name, path=None, target=None):
        if name != _FILE_UTILS_MODULE:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _WarningDivertingLoader(spec.loader)
                return spec
        return None


@contextlib.contextmanager
def frozen_modules_warning_to_log():
    """While pydevd is first imported: its frozen-modules warning goes to the fastattach
    logger (info), not to the service's stderr. Nothing happens if it was imported before."""
    if _FILE_UTILS_MODULE in sys.modules:
        yield
        return
    finder = _FrozenModulesWarningToLog()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)


_CONSTANTS_MODULE = "_pydevd_bundle.pydevd_constants"


@contextlib.contextmanager
def gevent_mode_hidden():
    """While pydevd is first imported: it does not see GEVENT_SUPPORT (pydevd's gevent mode).

    In that mode pydevd's import takes threading, _thread, time, socket, queue and select
    out of sys.modules and imports fresh copies for itself (pydevd_constants,
    protect_libraries_from_patching). Under debugpy that happens in the main thread before
    the program starts; here it would happen on the relay thread while the program runs,
    and then no breakpoint ever stops (a gevent program hangs at its first). Only Python's view of the
    environment (os.environ's mapping) loses the variable, for the import: no C code sees
    it change, and it is put back afterwards."""
    data = getattr(os.environ, "_data", None)
    key = os.environ.encodekey("GEVENT_SUPPORT") if data is not None else None
    if _CONSTANTS_MODULE in sys.modules or key not in (data or {}):
        yield
        return
    value = data.pop(key)
    try:
        yield
    finally:
        data.setdefault(key, value)


@contextlib.contextmanager
def no_connection_thread(py_db_class):
    """While pydevd.settrace runs: pydevd opens no listening socket of its own.

    With block_until_connected=False, pydevd would listen for the client itself; we hand it
    sockets instead. This one is needed to host pydevd at all, filter or not: without it
    pydevd would serve an unauthenticated port, so a pydevd that lacks it is refused.
    """
    original = getattr(py_db_class, "create_wait_for_connection_thread", None)
    if original is None:
        raise SeamMismatch("this pydevd has no PyDB.create_wait_for_connection_thread, so it would open an "
                           "unauthenticated port of its own; fastattach cannot host it")
    py_db_class.create_wait_for_connection_thread = lambda self: None
    try:
        yield
    finally:
        py_db_class.create_wait_for_connection_thread = original


def suspend_at(frame) -> None:
    """Stop the current thread at the next line ``frame`` runs (fastattach.breakpoint(), the loader)."""
    import pydevd

    pydevd.settrace(suspend=True, trace_only_current_thread=True, patch_multiprocessing=False,
                    stop_at_frame=frame, notify_stdin=False)


class AtomicDefaultDict(dict):
    """A defaultdict whose missing keys are filled atomically: every caller of ``d[key]``
    gets the same value, however threads interleave.

    collections.defaultdict calls the factory and then stores its result; with a factory
    written in Python (queue.Queue, threading.Event) another thread can run in between, so
    two threads asking for the same new key can get different objects, and the one stored
    first is lost. pydevd keeps each thread's command queue and wake-up event that way: a
    thread that stops makes its queue while the reader thread, handling the client's first
    request for that thread (an evaluate), makes another, so the request goes into a queue
    nobody reads and is never answered (seen on busy attach targets while the switch
    interval is short, see _handoff.py; docs/attach.md has the numbers)."""

    def __init__(self, default_factory, items=()):
        super().__init__(items)
        self.default_factory = default_factory

    def __missing__(self, key):
        # dict.setdefault is one step under the GIL: whoever stores first, everyone gets that.
        return self.setdefault(key, self.default_factory())


class Seam:
    """The patches made to one pydevd, in the order made, so that ``undo`` takes them out in reverse.

    Every install_* method records its undo; nothing here decides *what* the wrappers do,
    they call the functions they are given.
    """

    def __init__(self):
        self._undo: list = []     # callables, run last first
        self.refused_suspends = 0   # set_suspend / do_wait_suspend calls the production guard refused

    def undo(self) -> None:
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:
                log.exception("fastattach: undoing a change to pydevd failed")

    # -- process-wide, before pydevd starts ------------------------------------------------
    def install_thread_ids(self) -> None:
        """Make pydevd's thread ids from a counter, so that it stops keeping every thread it has
        seen alive.

        pydevd names a thread "pid_<pid>_id_<id(thread)>" and, so that id() is never reused,
        keeps each Thread forever in pydevd_constants._thread_id_to_thread_found (about 3 KB
        per thread: a server that starts short-lived threads grows without end). Ids from a
        counter are just as unique and never reused, and nothing in pydevd parses them (it
        builds them here and compares them whole). Ids already handed out stay valid after
        the undo: pydevd's own function reads a thread's id back from the same attribute.
        That is also why the counter is the process's, not the session's: a thread named in an
        earlier session keeps its id, and a new session counting from 1 again would give a new
        thread the same id (pydevd then steps or resumes the wrong thread)."""
        from _pydevd_bundle import pydevd_constants as constants

        original = constants._get_or_compute_thread_id_with_lock

        def _get_or_compute_thread_id_with_lock(thread, is_current_thread):
            with constants._thread_id_lock:
                tid = getattr(thread, "__pydevd_id__", None)
                if tid is not None:
                    return tid
                tid = f"pid_{constants.get_pid()}_fa_{next(_THREAD_ID_COUNTER)}"
                thread.__pydevd_id__ = tid
            return tid

        constants._get_or_compute_thread_id_with_lock = _get_or_compute_thread_id_with_lock
        self._undo.append(lambda: setattr(constants, "_get_or_compute_thread_id_with_lock", original))

    # -- on the new PyDB ---------------------------------------------------------------------
    def install_atomic_command_tables(self, py_db) -> None:
        # No thread holds a queue yet: threads take theirs when they stop, which needs a client.
        for name in COMMAND_TABLES:
            table = getattr(py_db, name)
            setattr(py_db, name, AtomicDefaultDict(table.default_factory, table))

            def restore(name=name, factory=table.default_factory):
                setattr(py_db, name, collections.defaultdict(factory, getattr(py_db, name)))

            self._undo.append(restore)

    def _wrap_method(self, py_db, name: str, wrapper) -> None:
        setattr(py_db, name, wrapper)   # an instance attribute shadows the method
        self._undo.append(lambda: py_db.__dict__.pop(name, None))

    def install_breakpoint_hooks(self, py_db, breakpoints_changed) -> None:
        """Call ``breakpoints_changed()`` whenever pydevd invalidates its own caches (py_db.mtime bumps)."""
        for name in ("on_breakpoints_changed", "_clear_caches"):
            original = getattr(py_db, name)

            def hook(*args, _original=original, **kwargs):
                breakpoints_changed()
                return _original(*args, **kwargs)

            self._wrap_method(py_db, name, hook)

    def install_condition_timing(self, py_db, lookup, charge) -> None:
        """Charge the time pydevd spends on a budgeted breakpoint's hit condition (or a
        condition C could not evaluate) to that breakpoint: ``charge(lookup(bp), ns)``."""
        original = py_db.handle_breakpoint_condition

        def handle_breakpoint_condition(info, bp, new_frame):
            budget = lookup(bp)
            if budget is None:
                return original(info, bp, new_frame)
            start = time.monotonic_ns()
            try:
                return original(info, bp, new_frame)
            finally:
                charge(budget, time.monotonic_ns() - start)

        self._wrap_method(py_db, "handle_breakpoint_condition", handle_breakpoint_condition)

    def install_suspend_guard(self, py_db, refuse) -> None:
        """While ``refuse()`` is true (production mode), pydevd's set_suspend and do_wait_suspend
        do nothing: the last line of defence against a suspended thread in a live process."""
        original_set_suspend = py_db.set_suspend
        original_do_wait_suspend = py_db.do_wait_suspend

        def set_suspend(*args, **kwargs):
            if refuse():
                self.refused_suspends += 1
                return None
            return original_set_suspend(*args, **kwargs)

        def do_wait_suspend(thread, *args, **kwargs):
            if refuse():
                self.refused_suspends += 1
                info = getattr(thread, "additional_info", None)
                if info is not None:
                    info.pydev_state = _STATE_RUN
                    info.pydev_step_cmd = -1
                return None
            return original_do_wait_suspend(thread, *args, **kwargs)

        self._wrap_method(py_db, "set_suspend", set_suspend)
        self._wrap_method(py_db, "do_wait_suspend", do_wait_suspend)

    def install_monitor(self, proxy) -> None:
        """Route pydevd's sys.monitoring calls through ``proxy``, and make pydevd register its
        callbacks again (now through the proxy) and re-arm its events.

        Both monitoring modules are patched when both are loaded: pydevd selects one when it
        starts, but the other stays importable and reachable (a PYDEVD_USE_CYTHON switch, a
        tool importing it by name), and a call through an unpatched ``monitor`` would register
        a raw callback around the filter and leave tool 0 with state we do not track."""
        selector = sys.modules[SELECTOR_MODULE_NAME]
        for module in monitoring_modules():
            module.monitor = proxy
            self._undo.append(lambda module=module: setattr(module, "monitor", sys.monitoring))
        selector.update_monitor_events()
        selector.restart_events()

    def verify(self, proxy, is_ours) -> None:
        """Read pydevd's registered callbacks back: each must be None or pass ``is_ours``.

        This is also the signature check for the Cython module, whose callbacks are C functions."""
        for module in monitoring_modules():
            if module.monitor is not proxy:
                raise SeamMismatch(f"{module.__name__}.monitor was replaced again")
        events = sys.monitoring.events
        for event in (events.PY_START, events.LINE, events.JUMP):
            current = sys.monitoring.register_callback(sys.monitoring.DEBUGGER_ID, event, None)
            sys.monitoring.register_callback(sys.monitoring.DEBUGGER_ID, event, current)
            if current is not None and not is_ours(current):
                raise SeamMismatch(f"pydevd's callback for event {event} was registered around the seam")


def forget_code_cache() -> None:
    """Empty pydevd's module-level per-code cache (it outlives PyDB instances).

    pydevd validates an entry only against py_db.mtime, which a new PyDB starts counting
    again: after stop() and listen() a stale entry could look current and hide a new
    breakpoint. Emptying it also releases every code object it kept alive.
    """
    for module in monitoring_modules():
        cache = getattr(module, "_code_to_func_code_info_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def reset_pydevd_after_fork(py_db) -> None:
    """In a forked child, pydevd's own fork handling without its reconnect: what
    pydev_monkey does for a child it debugs (its ForkSafeLocks remade, its log stream
    reopened, no global debugger, the forking thread's info and its monitoring thread-local
    state dropped), plus stoptrace()'s undoing of its thread-module patch.

    The parent's PyDB, whose threads did not survive the fork, is only marked disposed, and
    the forking thread marked running: a fork made while that thread was held at a
    breakpoint (a client evaluating code that forks) would otherwise leave the child in
    do_wait_suspend's loop for ever, waiting for a resume from a reader that is gone."""
    from _pydev_bundle import pydev_monkey
    from _pydevd_bundle.pydevd_constants import STATE_RUN, set_global_debugger

    py_db.pydb_disposed = True
    info = getattr(threading.current_thread(), "additional_info", None)
    if info is not None:
        info.pydev_state = STATE_RUN
        info.pydev_step_cmd = -1
    pydev_monkey._on_forked_process(setup_tracing=False)
    set_global_debugger(None)
    pydev_monkey.undo_patch_thread_modules()
    for module in monitoring_modules():
        reset = getattr(module, "reset_thread_local_info", None)
        if reset is not None:
            reset()
    forget_code_cache()


def send_output(py_db, text: str) -> None:
    """An `output` event with `text`, sent by pydevd on its writer (what a logpoint hit sends)."""
    writer = getattr(py_db, "writer", None)
    if writer is not None:
        writer.add_command(py_db.cmd_factory.make_io_message(text, "1"))


_STATE_SUSPEND = 2  # pydevd_constants.STATE_SUSPEND
# pydevd's functions that run a client's evaluate request (the debug console, hovers, watches).
_EVALUATE_FUNCTIONS = frozenset({"internal_evaluate_expression_json", "internal_evaluate_expression"})


def in_client_evaluation() -> bool:
    """Whether the caller runs inside pydevd's evaluation of a client's request."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name in _EVALUATE_FUNCTIONS and "pydevd" in code.co_filename:
            return True
        frame = frame.f_back
    return False


def suspended_threads() -> list:
    """The threads pydevd keeps suspended (its per-thread state, as gate._need_slow reads it)."""
    return [thread for thread in list(threading._active.values())
            if getattr(getattr(thread, "additional_info", None), "pydev_state", None) == _STATE_SUSPEND]


def has_breakpoints(py_db) -> bool:
    """Any line, function or exception breakpoint left in pydevd."""
    return bool(any(py_db.breakpoints.values()) or py_db.function_breakpoint_name_to_breakpoint
                or py_db.break_on_caught_exceptions or py_db.break_on_uncaught_exceptions
                or getattr(py_db, "break_on_user_uncaught_exceptions", None))

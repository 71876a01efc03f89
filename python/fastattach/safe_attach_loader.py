"""safe_attach_loader: the only code an attach makes a running process execute.

It starts fastattach's listener inside the target and reports the port. It may run on the
target's main thread (a pending call or PEP 768: the main thread was between two bytecodes)
or on the attach agent's own thread (ptrace injection: the main thread was blocked in C).

Settings, each ``PTVS_*`` name read from the environment and overridden by the JSON file
the orchestrator names in ``__fastattach_settings__`` (the target's environment is not
the orchestrator's to change):

- ``PTVS_DEBUG_HOST`` (default 127.0.0.1), ``PTVS_DEBUG_PORT`` (0 = a free port)
- ``PTVS_WAIT_FOR_CLIENT`` = 1 or ``PTVS_DEBUG_BREAK`` = 1: wait for a client, then break
- ``PTVS_DEBUG_PORT_FILE``: the chosen port is written there (atomically); a failure is
  written as JSON to the same path plus ``.error``
- ``PTVS_SAFE_ATTACH_LOADER_VERBOSE`` (on unless 0), ``PTVS_DEBUG_LOG_FILE``
- ``FASTATTACH_SECRET``: the secret clients must present (only ever from the settings file
  or the environment the target already has)
- ``FASTATTACH_LOG_DIR``: passed to ``fastattach.configure(log_dir=...)`` (debugger logs)

Rules it keeps: nothing escapes into the target (every exception is caught and reported
through the files above); it binds no name in ``__main__``; it leaves ``sys.path`` as it
found it once its imports are done (the package directory holds modules such as ``cli``
that must not shadow the application's); it never blocks the thread it runs on unless a
wait was asked for, and then waits on the right thread (see ``_wait_and_break``).
"""

import sys

# Before any import that could pull in threading: on 3.12, a first import of threading
# from a thread other than the main one makes that thread threading.main_thread()
# (https://bugs.python.org/issue37416, research/attach.md §2).
_THREADING_WAS_IMPORTED = "threading" in sys.modules

import json  # noqa: E402
import os  # noqa: E402

SETTING_NAMES = (
    "PTVS_DEBUG_HOST", "PTVS_DEBUG_PORT", "PTVS_WAIT_FOR_CLIENT", "PTVS_DEBUG_BREAK", "PTVS_DEBUG_PORT_FILE",
    "PTVS_SAFE_ATTACH_LOADER_VERBOSE", "PTVS_DEBUG_LOG_FILE", "FASTATTACH_SECRET", "FASTATTACH_LOG_DIR",
)


class _Log:
    def __init__(self, settings):
        self.verbose = settings.get("PTVS_SAFE_ATTACH_LOADER_VERBOSE", "1") != "0"
        self.path = settings.get("PTVS_DEBUG_LOG_FILE") or None

    def __call__(self, message, always=False):
        if not (self.verbose or always):
            return
        line = f"fastattach loader [pid {os.getpid()}]: {message}\n"
        try:
            if self.path:
                with open(self.path, "a") as f:
                    f.write(line)
            else:
                sys.stderr.write(line)
        except Exception:
            pass


def _write_atomically(path, text):
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def _report_error(settings, log, reason, message):
    log(message, always=True)
    port_file = settings.get("PTVS_DEBUG_PORT_FILE")
    if port_file:
        try:
            _write_atomically(port_file + ".error", json.dumps({"reason": reason, "message": message}))
        except Exception as exc:
            log(f"cannot write {port_file}.error: {exc}", always=True)


def _read_settings(namespace):
    """Environment first, then the orchestrator's file, which this run claims for itself.

    Returns None when another delivery of the same attach already claimed the file, or the
    attach is over (its directory is gone): then there is nothing to do."""
    settings = {name: os.environ[name] for name in SETTING_NAMES if name in os.environ}
    path = namespace.get("__fastattach_settings__")
    if path:
        claimed = f"{path}.claimed"
        try:
            os.rename(path, claimed)  # atomic: exactly one run wins
        except OSError:
            return None
        with open(claimed) as f:
            settings.update(json.load(f))
    return settings


def _fix_main_thread(main_ident, log):
    """3.12: if threading was first imported here, on a helper thread, make its idea of the
    main thread point at the real one again (debugpy's attach_script.fix_main_thread_id)."""
    if _THREADING_WAS_IMPORTED or not main_ident or sys.version_info >= (3, 13):
        return
    import threading

    main = threading._main_thread
    if main.ident == main_ident or threading.get_ident() == main_ident:
        return
    with threading._active_limbo_lock:
        threading._active.pop(main._ident, None)
        # The lock made for the main thread is bound to this helper thread's state and would be
        # released when this thread ends, which trips an assert at interpreter shutdown.
        main._tstate_lock = threading._allocate_lock()
        main._tstate_lock.acquire()
        main._ident = main_ident
        main._native_id = os.getpid()
        threading._active[main_ident] = main
    log("fixed threading.main_thread() (threading was first imported on the attach thread)")


def _prepared_sys_path():
    """Directories to put first while importing: ours, our package's parent, a bundled debugpy."""
    here = os.path.dirname(os.path.abspath(__file__))
    entries = [here]
    if os.path.basename(here) == "fastattach":
        entries.append(os.path.dirname(here))
    bundled = os.path.join(here, "debugpy")
    if os.path.isfile(os.path.join(bundled, "debugpy", "__init__.py")):
        entries.insert(0, bundled)
    return entries


def _import_debugger(log):
    added = _prepared_sys_path()
    saved = list(sys.path)
    sys.path[:0] = added
    try:
        try:
            import debugpy  # noqa: F401 (imported for its side effect: the bundled copy wins)
        except ImportError:
            import ptvsd  # noqa: F401
            sys.modules["debugpy"] = ptvsd
            log("debugpy not importable; using ptvsd as debugpy")
        import fastattach
    finally:
        # Only our own insertions are removed: anything the imports added themselves stays.
        for entry in added:
            if entry not in saved and entry in sys.path:
                sys.path.remove(entry)
    return fastattach


def _current_listener_address(fastattach):
    try:
        listener = fastattach._api._listener
        return None if listener is None else tuple(listener.address)
    except AttributeError:
        return None


def _is_true(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _application_frame(frame):
    """The frame the target was running when our bootstrap interrupted it: the caller of the
    ``<string>`` frame PyRun_SimpleString made for the bootstrap code. None if there is none
    (the loader was started some other way, or on a thread with no Python frames)."""
    while frame is not None:
        if frame.f_code.co_filename == "<string>":
            return frame.f_back
        frame = frame.f_back
    return None


def _break_at(fastattach, frame, log):
    """Stop at the next line ``frame`` runs: the application's code, not ours. This is what
    fastattach.breakpoint() does for its caller, aimed one level lower."""
    if frame is None:
        fastattach.breakpoint()
        return
    if not fastattach.is_client_connected():
        return
    import pydevd

    pydevd.settrace(suspend=True, trace_only_current_thread=True, patch_multiprocessing=False,
                    stop_at_frame=frame, notify_stdin=False)
    log(f"initial breakpoint set in {frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")


def _wait_and_break(fastattach, main_ident, log):
    """Wait for a client, then stop in the application's code on the main thread.

    On the main thread (mailbox, PEP 768) we are inside the application: wait here, which
    pauses the program as asked, then stop in the frame we interrupted. On the agent's
    helper thread (ptrace: the main thread is blocked in C), waiting here pauses nothing of
    the application's, so we wait here and then queue the break as a pending call for the
    main thread: it stops there as soon as it returns to Python code."""
    import threading

    on_main = threading.get_ident() == (main_ident or threading.main_thread().ident)
    fastattach.wait_for_client()
    log("client connected")
    if on_main:
        _break_at(fastattach, _application_frame(sys._getframe()), log)
        return
    import ctypes

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
    def break_on_main_thread(_arg):
        try:
            # Our caller is the frame the main thread was running when the call was taken.
            _break_at(fastattach, sys._getframe(1), log)
        except BaseException as exc:  # a pending call must return 0 with no exception set
            log(f"initial breakpoint failed: {exc!r}", always=True)
        return 0

    _pending_break_callbacks.append(break_on_main_thread)  # must outlive the call
    if ctypes.pythonapi.Py_AddPendingCall(break_on_main_thread, None) != 0:
        log("could not queue the initial breakpoint on the main thread", always=True)


_pending_break_callbacks = []


def main(namespace):
    try:
        settings = _read_settings(namespace)
    except Exception as exc:
        sys.stderr.write(f"fastattach loader: cannot read the attach settings: {exc!r}\n")
        return
    if settings is None:
        return
    log = _Log(settings)
    main_ident = namespace.get("__fastattach_main_ident__", 0)
    try:
        _fix_main_thread(main_ident, log)
        fastattach = _import_debugger(log)
    except BaseException as exc:
        _report_error(settings, log, "loader_failed", f"the loader could not import debugpy/fastattach: {exc!r}")
        return
    if settings.get("FASTATTACH_LOG_DIR"):
        try:
            fastattach.configure(log_dir=settings["FASTATTACH_LOG_DIR"])
        except Exception as exc:
            log(f"cannot set the log directory {settings['FASTATTACH_LOG_DIR']}: {exc!r}", always=True)
    host = settings.get("PTVS_DEBUG_HOST") or "127.0.0.1"
    try:
        port = int(settings.get("PTVS_DEBUG_PORT") or 0)
        already = _current_listener_address(fastattach)
        if already is not None and port in (0, already[1]):
            # A second attach to a process that still listens: hand out the same port.
            bound_host, bound_port = already
            log(f"already listening on {bound_host}:{bound_port}")
        else:
            bound_host, bound_port = fastattach.listen((host, port), secret=settings.get("FASTATTACH_SECRET") or None)
    except OSError as exc:
        _report_error(settings, log, "bind_failed", f"port bind failed in the target: cannot listen on "
                                                    f"{host}:{settings.get('PTVS_DEBUG_PORT')}: {exc}")
        return
    except BaseException as exc:
        _report_error(settings, log, "loader_failed", f"fastattach.listen failed in the target: {exc!r}")
        return
    log(f"listening on {bound_host}:{bound_port}")
    port_file = settings.get("PTVS_DEBUG_PORT_FILE")
    if port_file:
        try:
            _write_atomically(port_file, str(bound_port))
        except Exception as exc:
            log(f"cannot write the port file {port_file}: {exc!r}", always=True)
    if _is_true(settings.get("PTVS_WAIT_FOR_CLIENT", "0")) or _is_true(settings.get("PTVS_DEBUG_BREAK", "0")):
        try:
            _wait_and_break(fastattach, main_ident, log)
        except BaseException as exc:
            log(f"waiting for the client failed: {exc!r}", always=True)


if __name__ == "__fastattach_loader__":
    try:
        main(globals())
    except BaseException:
        pass

"""safe_attach_loader: the only code an attach makes a running process execute.

It starts fastattach's listener inside the target and reports the port. It runs on a thread
of its own: one the main thread started from a pending call or PEP 768 (so the main thread
pauses for microseconds, not for our imports), or the attach agent's thread (ptrace
injection: the main thread was blocked in C).

Settings, each ``PTVS_*`` name read from the environment and overridden by the file
the orchestrator names in the global ``_fa_settings`` (the target's environment is not
the orchestrator's to change):

- ``PTVS_DEBUG_HOST`` (default 127.0.0.1), ``PTVS_DEBUG_PORT`` (0 = a free port)
- ``PTVS_WAIT_FOR_CLIENT`` = 1 or ``PTVS_DEBUG_BREAK`` = 1: wait for a client, then break
- ``PTVS_DEBUG_PORT_FILE``: the chosen port is written there (atomically); a failure is
  written to the same path plus ``.error`` (reason and message, see ``encode_fields``)
- ``PTVS_SAFE_ATTACH_LOADER_VERBOSE`` (on unless 0), ``PTVS_DEBUG_LOG_FILE``
- ``FASTATTACH_SECRET``: the secret clients must present (only ever from the settings file
  or the environment the target already has)
- ``FASTATTACH_LOG_DIR``: passed to ``fastattach.configure(log_dir=...)`` (debugger logs)
- ``FASTATTACH_PROBES``: an absolute path; the process watches that probe file
  (``fastattach.probes.watch``) and reads it as itself, never with the attacher's rights.
  With ``FASTATTACH_ACTION`` = probes it only does that: no listener, no debugpy import.
  What the first look at the file found goes to the port file plus ``.probes``.

Rules it keeps: nothing escapes into the target (every exception is caught and reported
through the files above); it binds no name in ``__main__``; it leaves ``sys.path`` as it
found it once its imports are done (the package directory holds modules such as ``cli``
that must not shadow the application's); it never blocks: a wait for the client, if asked
for, happens on the application's main thread (see ``_wait_and_break``).
"""

import sys

# Before any import that could pull in threading: on 3.12, a first import of threading
# from a thread other than the main one makes that thread threading.main_thread()
# (https://bugs.python.org/issue37416, docs/attach.md).
_THREADING_WAS_IMPORTED = "threading" in sys.modules

import os  # noqa: E402


def _load_leaf(name):
    """A module of the package that imports only the standard library, run from its file beside
    this one: the loader needs it before the package is importable (see _import_debugger).
    The copy is the loader's own; it is not put in sys.modules. (runpy, which runs the loader,
    has imported importlib.util already.)"""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location(f"_fastattach_loader_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_contract = _load_leaf("_loader_contract")
_handoff = _load_leaf("_handoff")
SETTING_NAMES = _contract.SETTING_NAMES
prompt_gil_handoffs = _handoff.prompt_gil_handoffs

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
            _write_atomically(port_file + ".error", _contract.encode_fields({"reason": reason, "message": message}))
        except Exception as exc:
            log(f"cannot write {port_file}.error: {exc}", always=True)


def _read_settings(namespace):
    """Environment first, then the orchestrator's file, which this run claims for itself.

    Returns None when another delivery of the same attach already claimed the file, or the
    attach is over (its directory is gone): then there is nothing to do."""
    settings = {name: os.environ[name] for name in SETTING_NAMES if name in os.environ}
    path = namespace.get(_contract.SETTINGS_GLOBAL)
    if path:
        claimed = f"{path}.claimed"
        try:
            os.rename(path, claimed)  # atomic: exactly one run wins
        except OSError:
            return None
        with open(claimed) as f:
            settings.update(_contract.decode_fields(f.read()))
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


class _NotBuiltForThisPython(Exception):
    """No fastattach with a C extension for this interpreter is importable here."""


def _has_extension(fastattach):
    """Whether ``fastattach._fasttrace`` can be found for this interpreter (find_spec only
    matches this interpreter's own extension suffixes; nothing is loaded). A directory that
    only holds built files (an editable install's site-packages/fastattach) imports as a
    namespace package with no API: that is not a fastattach."""
    import importlib.util

    if not hasattr(fastattach, "listen"):
        return False
    try:
        return importlib.util.find_spec("fastattach._fasttrace") is not None
    except (ImportError, ValueError):
        return False


class _NoDebugpy(Exception):
    """Neither debugpy nor ptvsd is importable."""


def _import_with(entries, log, with_debugpy=True):
    """Import debugpy (unless not ``with_debugpy``: probes only) and fastattach with
    ``entries`` first on sys.path, then take out exactly those entries again."""
    saved = list(sys.path)
    sys.path[:0] = entries
    try:
        try:
            if with_debugpy:
                import debugpy  # noqa: F401 (imported for its side effect: the bundled copy wins)
        except ImportError:
            try:
                import ptvsd
            except ImportError as exc:
                raise _NoDebugpy(f"neither debugpy nor ptvsd is importable: {exc!r}") from None
            sys.modules["debugpy"] = ptvsd
            log("debugpy not importable; using ptvsd as debugpy")
        import fastattach
    finally:
        # Remove our own insertions (the first occurrences: we put them in front), and only
        # those: an entry that was there before stays, and so does anything the imports added.
        for entry in entries:
            if sys.path.count(entry) > saved.count(entry):
                sys.path.remove(entry)
    return fastattach


def _forget_fastattach_imported_since(before):
    for name in set(sys.modules) - before:
        if name == "fastattach" or name.startswith("fastattach."):
            del sys.modules[name]


def _import_debugger(log, with_debugpy=True):
    """The attaching CLI's own fastattach comes first, so that one installation serves every
    target of its Python version. A target on another version cannot use that copy's C
    extension: then we use the fastattach the target itself can import, if it has one built
    for it; if not, the attach fails here, before the CLI reports success."""
    before = set(sys.modules)
    ours = _prepared_sys_path()
    try:
        fastattach = _import_with(ours, log, with_debugpy)
        if _has_extension(fastattach):
            return fastattach
    except ImportError:
        fastattach = None
    where = os.path.dirname(fastattach.__file__) if fastattach is not None else ours[0]
    _forget_fastattach_imported_since(before)
    try:
        fastattach = _import_with([], log, with_debugpy)
    except ImportError:
        fastattach = None
    if fastattach is not None and _has_extension(fastattach):
        log(f"using this process's own fastattach ({os.path.dirname(fastattach.__file__)}): the attaching "
            f"one ({where}) is not built for Python {sys.version_info[0]}.{sys.version_info[1]}")
        return fastattach
    _forget_fastattach_imported_since(before)
    version = "{}.{}.{}".format(*sys.version_info)
    raise _NotBuiltForThisPython(
        f"PID {os.getpid()} runs Python {version} ({sys.executable}), and no fastattach built for it is "
        f"importable there: the attaching one ({where}) has no C extension for Python "
        f"{sys.version_info[0]}.{sys.version_info[1]}. Install fastattach for that Python "
        f"({sys.executable} -m pip install fastattach, in the target's environment), or attach with "
        f"the fastattach of that Python")


def _current_listener(fastattach):
    try:
        return fastattach._api.session().listener
    except AttributeError:   # a fastattach too old to say
        return None


def _same_host(requested, bound):
    """Whether listening on ``requested`` is what ``bound`` (a numeric address) already is."""
    if requested == bound:
        return True
    import socket

    try:
        return bound in {info[4][0] for info in socket.getaddrinfo(requested, None)}
    except OSError:
        return False


def _listening_differently(listener, host, port, secret):
    """Why the listener a process already has is not the one asked for, or None if it is.
    A second attach must not hand out a port whose settings differ from the ones asked for
    (a secret silently not enforced, 127.0.0.1 reported as 0.0.0.0)."""
    bound_host, bound_port = listener.address
    current = listener.requires_secret
    described = f"{bound_host}:{bound_port} {'with' if current else 'without'} a secret"
    if port not in (0, bound_port):
        return described, f"port {port} was asked for"
    if not _same_host(host, bound_host):
        return described, f"host {host} was asked for"
    if bool(secret) != current:
        return described, "a secret was asked for" if secret else "no secret was given"
    if secret and not listener.secret_matches(secret):
        return described, "another secret was given"
    return None


def _stop(settings, log):
    """`--pid PID --stop`: fastattach.stop() in this process, if fastattach is here at all
    (never imported for this), and a report of what it removed."""
    fastattach = sys.modules.get("fastattach")
    api = getattr(fastattach, "_api", None)
    try:
        if api is None:
            summary = f"fastattach is not loaded in PID {os.getpid()}: nothing to remove"
        else:
            process = api.session()
            listener, host = process.listener, process.host
            removed = []
            if listener is not None:
                bound_host, bound_port = listener.address
                removed.append(f"the listener on {bound_host}:{bound_port}")
                if listener.client_connected:
                    removed.append("its client's session (disconnected)")
            if host is not None and host.started:
                removed.append("pydevd's sys.monitoring callbacks and events (tool id freed)")
            _without_a_dummy_thread(fastattach.stop)
            summary = (f"removed from PID {os.getpid()}: " + "; ".join(removed) if removed
                       else f"PID {os.getpid()} has fastattach loaded but not listening: nothing to remove")
            engine = getattr(process, "probes", None)
            probes = len(engine.list()) if engine is not None else 0
            if probes:
                # stop() ends debugging, never the process's probes (docs/probes.md): say they run on.
                counted = "1 probe keeps" if probes == 1 else f"{probes} probes keep"
                summary += (f"; its {counted} running (probes belong to the process: edit its probe file, or "
                            f"use python -m fastattach probe ... remove)")
    except BaseException as exc:
        _report_error(settings, log, "loader_failed", f"fastattach.stop() failed in the target: {exc!r}")
        return
    log(summary)
    port_file = settings.get("PTVS_DEBUG_PORT_FILE")
    if port_file:
        try:
            _write_atomically(port_file + _contract.STOPPED_SUFFIX, summary)
        except Exception as exc:
            log(f"cannot write {port_file}{_contract.STOPPED_SUFFIX}: {exc!r}", always=True)


def _without_a_dummy_thread(function):
    """Calls function; on a thread threading did not know (the injected one, ptrace delivery),
    the _DummyThread that threading.current_thread() made for it meanwhile is dropped again: it
    would be listed among the program's threads for ever."""
    import threading

    ident = threading.get_ident()
    known = ident in threading._active
    try:
        function()
    finally:
        if not known:
            with threading._active_limbo_lock:
                threading._active.pop(ident, None)


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


def _user_frame(frame):
    """``frame`` or the nearest caller that is the application's own code: the main thread may
    have been interrupted inside the standard library (os.path.join, a frozen module), where
    a debugger showing "just my code" would never stop."""
    import sysconfig

    library_dirs = tuple({os.path.join(path, "") for name, path in sysconfig.get_paths().items()
                          if name in ("stdlib", "platstdlib", "purelib", "platlib")})
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")
    candidate = frame
    while candidate is not None:
        filename = candidate.f_code.co_filename
        if not (filename.startswith("<frozen") or filename.startswith(library_dirs) or filename.startswith(here)):
            return candidate
        candidate = candidate.f_back
    return frame


def _break_at(fastattach, frame, log):
    """Stop at the next line ``frame`` (or the application frame that called it) runs: the
    application's code, not ours. This is what fastattach.breakpoint() does for its caller,
    aimed lower down the stack."""
    frame = _user_frame(frame) if frame is not None else None
    if frame is None:
        fastattach.breakpoint()
        return
    if not fastattach.is_client_connected():
        return
    fastattach._api.break_at(frame)
    log(f"initial breakpoint set in {frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")


def _wait_and_break(fastattach, main_ident, log):
    """Wait for a client, then stop in the application's code on the main thread.

    "Wait" means the application pauses until a client is there, as with debugpy, and the
    application is its main thread. The delivery normally runs us on a thread of our own
    (the main thread only started it, or it was blocked in C), so we queue a pending call:
    the main thread runs it at its next bytecode boundary (at once if it is running Python,
    as soon as it returns if it is blocked in C), waits there for the client, then stops at
    the next line of the frame it was running. If we already are on the main thread (the
    loader was run there by other means), we do the same inline."""
    import threading

    if threading.get_ident() == (main_ident or threading.main_thread().ident):
        fastattach.wait_for_client()
        log("client connected")
        _break_at(fastattach, _application_frame(sys._getframe()), log)
        return
    import ctypes

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
    def wait_and_break_on_main_thread(_arg):
        try:
            fastattach.wait_for_client()
            log("client connected")
            # Our caller is the frame the main thread was running when it took the call.
            _break_at(fastattach, sys._getframe(1), log)
        except BaseException as exc:  # a pending call must return 0 with no exception set
            log(f"waiting for the client on the main thread failed: {exc!r}", always=True)
        return 0

    # The queue holds only a raw pointer to the callback's thunk, and this file runs as a
    # temporary module whose globals are garbage once it returns (found as a SIGSEGV on
    # 3.13). Nothing tells us when the call has run, so the callback is kept for the life of
    # the process: a deliberate leak of a few hundred bytes, for wait-for-client attaches only.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(wait_and_break_on_main_thread))
    if ctypes.pythonapi.Py_AddPendingCall(wait_and_break_on_main_thread, None) != 0:
        log("could not queue the wait for the client on the main thread", always=True)
    else:
        log("the main thread will wait for the client at its next Python instruction")


def main(namespace):
    # Around everything, even a run that finds nothing to do: the bootstrap that started us
    # may have shortened the interval already.
    with prompt_gil_handoffs(namespace.get(_contract.SWITCH_INTERVAL_GLOBAL)):
        _main(namespace)


def _main(namespace):
    try:
        settings = _read_settings(namespace)
    except Exception as exc:
        sys.stderr.write(f"fastattach loader: cannot read the attach settings: {exc!r}\n")
        return
    if settings is None:
        return
    log = _Log(settings)
    if settings.get("FASTATTACH_ACTION") == "stop":
        _stop(settings, log)
        return
    main_ident = namespace.get(_contract.MAIN_IDENT_GLOBAL, 0)
    probes_only = settings.get("FASTATTACH_ACTION") == "probes"
    try:
        _fix_main_thread(main_ident, log)
        fastattach = _import_debugger(log, with_debugpy=not probes_only)
    except _NotBuiltForThisPython as exc:
        _report_error(settings, log, "not_installed", str(exc))
        return
    except BaseException as exc:
        _report_error(settings, log, "loader_failed", f"the loader could not import debugpy/fastattach: {exc!r}")
        return
    if settings.get("FASTATTACH_LOG_DIR"):
        try:
            fastattach.configure(log_dir=settings["FASTATTACH_LOG_DIR"])
        except Exception as exc:
            log(f"cannot set the log directory {settings['FASTATTACH_LOG_DIR']}: {exc!r}", always=True)
    if probes_only:
        _watch_probes(fastattach, settings, log)
        return
    host = settings.get("PTVS_DEBUG_HOST") or "127.0.0.1"
    secret = settings.get("FASTATTACH_SECRET") or None
    try:
        port = int(settings.get("PTVS_DEBUG_PORT") or 0)
        with _listen_lock(fastattach):
            bound_host, bound_port = _listen_or_join(fastattach, settings, log, host, port, secret)
    except _AlreadyReported:
        return
    except OSError as exc:
        _report_error(settings, log, "bind_failed", f"port bind failed in the target: cannot listen on "
                                                    f"{host}:{settings.get('PTVS_DEBUG_PORT')}: {exc}")
        return
    except BaseException as exc:
        _report_error(settings, log, "loader_failed", f"fastattach.listen failed in the target: {exc or repr(exc)}")
        return
    log(f"listening on {bound_host}:{bound_port}")
    if settings.get("FASTATTACH_PROBES") and not _watch_probes(fastattach, settings, log):
        return
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


class _AlreadyReported(Exception):
    pass


def _watch_probes(fastattach, settings, log):
    """Watch the probe file FASTATTACH_PROBES names, as this process's user (the attacher only
    handed over its name), and report what the first look found; False if watching failed
    (reported as the attach's error)."""
    path = settings.get("FASTATTACH_PROBES") or ""
    try:
        if not os.path.isabs(path):
            raise ValueError(f"the probe file must be named by an absolute path, not {path!r}")
        process = fastattach._api.session()
        process.watch_probes(path)
        summary = process.probe_watch_summary(path)
    except BaseException as exc:
        _report_error(settings, log, "loader_failed", f"watching the probe file {path} failed in the target: "
                                                      f"{exc or repr(exc)}")
        return False
    log(summary)
    port_file = settings.get("PTVS_DEBUG_PORT_FILE")
    if port_file:
        try:
            _write_atomically(port_file + _contract.PROBES_SUFFIX, summary)
        except Exception as exc:
            log(f"cannot write {port_file}{_contract.PROBES_SUFFIX}: {exc!r}", always=True)
    return True


def _listen_lock(fastattach):
    """Loaders of concurrent attaches (each on its own thread of this process) take turns
    between looking for a listener and starting one: the later ones find the first's."""
    import contextlib

    lock = getattr(getattr(fastattach, "_api", None), "session", lambda: None)()
    return getattr(lock, "_lock", None) or contextlib.nullcontext()


def _listen_or_join(fastattach, settings, log, host, port, secret):
    """The listener this attach hands out: the one already here if it is the one asked for."""
    already = _current_listener(fastattach)
    if already is not None:
        # A second attach to a process that still listens: the same listener is handed out
        # only if it is the one asked for. Changing it would cut off its client, if any.
        different = _listening_differently(already, host, port, secret)
        if different is not None:
            described, why = different
            _report_error(settings, log, "already_listening",
                          f"PID {os.getpid()} is already listening on {described}, and {why}. To change "
                          f"it, stop that listener first (fastattach.stop() in the process, e.g. from a "
                          f"client's debug console), then attach again; or attach with the same settings")
            raise _AlreadyReported
        log(f"already listening on {already.address[0]}:{already.address[1]}")
        return already.address
    return fastattach.listen((host, port), secret=secret)


# runpy.run_path's default name: the orchestrator's bootstrap runs us that way. Importing
# this file as a module (tests do) runs nothing.
if __name__ == "<run_path>":
    try:
        main(globals())
    except BaseException:
        pass

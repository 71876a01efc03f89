"""Attach to a running CPython by PID: make it run safe_attach_loader.py, return its address.

How the loader reaches the target, by version and by what the main thread is doing:

=============  =======================================  ===========================================
target         main thread running bytecode             main thread blocked in native code
=============  =======================================  ===========================================
3.14+          PEP 768 (``_pep768``)                    ptrace injector, if PEP 768 has not run
3.12 / 3.13    pending-call mailbox (``_mailbox``)      ptrace injector (``_injector``)
=============  =======================================  ===========================================

The target's environment is not ours to set, so the settings (host, port, wait, log file,
where to write the port) go into a small file in a fresh private directory; the code
the target runs names that file. The loader claims the file by renaming it, so however many
deliveries end up running (a queued mailbox call can run late, after the injector already
worked) exactly one starts the listener; the others find nothing to claim and return.
The directory is removed when the attach ends, so a late run is a no-op.

Every step has a deadline. The target is never left stopped: the injector restores and
detaches in ``finally``, and a timeout reports the target's state from /proc.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
import time

from .._address import parse_address
from .._handoff import STARTUP_SWITCH_INTERVAL
from .._loader_contract import (
    LOADER_NAME,
    MAIN_IDENT_GLOBAL,
    PROBES_SUFFIX,
    SETTINGS_GLOBAL,
    STOPPED_SUFFIX,
    SWITCH_INTERVAL_GLOBAL,
    decode_fields,
    encode_fields,
)
from . import _injector, _mailbox, _pep768, _runtime
from ._errors import AttachError, process_state, target_uid

DEFAULT_TIMEOUT = 10.0
# How long a busy main thread gets to pick up the mailbox before we fall back to ptrace.
# A thread running bytecode checks its eval breaker every few microseconds to 5 ms.
MAILBOX_GRACE = 0.3
AGENT_NAME = "_attach_agent.so"


def package_dirs() -> list[str]:
    import fastattach
    dirs = [os.path.dirname(os.path.abspath(fastattach.__file__))]
    dirs += [os.path.abspath(d) for d in getattr(fastattach, "__path__", [])]
    import sysconfig
    for key in ("platlib", "purelib"):
        dirs.append(os.path.join(sysconfig.get_paths()[key], "fastattach"))
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def default_loader_path() -> str:
    override = os.environ.get("PTVS_SAFE_ATTACH_LOADER_OVERRIDE")
    if override:
        return override
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), LOADER_NAME)


def agent_path() -> str:
    override = os.environ.get("FASTATTACH_ATTACH_AGENT")
    if override:
        return override
    for directory in package_dirs():
        candidate = os.path.join(directory, AGENT_NAME)
        if os.path.exists(candidate):
            return candidate
    raise AttachError("injection_failed", f"the attach agent {AGENT_NAME} is not built (looked in "
                                          f"{', '.join(package_dirs())}); reinstall fastattach")


def bootstrap_code(loader: str, settings: str, main_ident: int) -> str:
    """The code the agent's thread runs (ptrace path): shorten the switch interval (see
    _handoff.prompt_gil_handoffs; the loader puts it back), then run the loader.
    It binds no name where it runs and swallows everything (SystemExit included, which would
    end the process)."""
    return (f"try:(lambda s,v:s.setswitchinterval(min(v,{STARTUP_SWITCH_INTERVAL!r}))or "
            f"__import__('runpy').run_path({loader!r},{{{SETTINGS_GLOBAL!r}:{settings!r},"
            f"{MAIN_IDENT_GLOBAL!r}:{main_ident},{SWITCH_INTERVAL_GLOBAL!r}:v}}))"
            f"(__import__('sys'),__import__('sys').getswitchinterval())\nexcept BaseException:pass\n")


def main_thread_bootstrap(loader: str, settings: str) -> str:
    """The code a pending call or PEP 768 runs on the main thread: start a thread for the loader
    and return at once, so the application's main thread pauses for microseconds, not for the
    loader's imports. The thread is told the main thread's identity (for the 3.12 threading
    fix) and the switch interval, which the main thread shortens before it goes on: the
    loader's thread must not wait for the GIL behind a main thread that never waits (it did,
    0.3-1 s, long enough for the orchestrator to give up on the mailbox). It binds no name in
    __main__ (where PyRun_SimpleString runs) and swallows everything: an exception escaping a
    pending call would surface as a SystemError in whatever the main thread was executing.
    (The loader catches its own errors; only a loader file that cannot be read at all would
    print a traceback, and the orchestrator checks it exists first.)"""
    return (f"try:(lambda t,s,v:t.start_new_thread(__import__('runpy').run_path,({loader!r},"
            f"{{{SETTINGS_GLOBAL!r}:{settings!r},{MAIN_IDENT_GLOBAL!r}:t.get_ident(),{SWITCH_INTERVAL_GLOBAL!r}:v}}))"
            f"and s.setswitchinterval(min(v,{STARTUP_SWITCH_INTERVAL!r})))"
            f"(__import__('_thread'),__import__('sys'),__import__('sys').getswitchinterval())\n"
            f"except BaseException:pass\n")


def file_bootstrap(path: str) -> str:
    """What the mailbox queues: run the bootstrap kept in ``path``. On 3.12 the queued code
    must fit in 16 free slots of the pending-call ring (255 bytes), and the bootstrap itself
    does not. The file is read with os (not whatever ``open`` means in __main__) and closed
    before it runs: an unclosed file would warn, and the warning would leave
    __warningregistry__ in __main__."""
    return (f"try:(lambda o,d:exec((o.read(d,65536),o.close(d))[0]))"
            f"(__import__('os'),__import__('os').open({path!r},0))"
            f"\nexcept BaseException:pass\n")


def _settings_payload(host: str, port: int, wait_for_client: bool, log_file: str | None, port_file: str,
                      verbose: bool, secret: str | None, log_dir: str | None = None) -> dict:
    settings = {
        "PTVS_DEBUG_HOST": host,
        "PTVS_DEBUG_PORT": str(port),
        "PTVS_WAIT_FOR_CLIENT": "1" if wait_for_client else "0",
        "PTVS_DEBUG_PORT_FILE": port_file,
        "PTVS_SAFE_ATTACH_LOADER_VERBOSE": "1" if verbose else "0",
    }
    if log_file:
        settings["PTVS_DEBUG_LOG_FILE"] = os.path.abspath(log_file)
    if secret:
        settings["FASTATTACH_SECRET"] = secret  # the file is 0600 in a 0700 directory
    if log_dir:
        settings["FASTATTACH_LOG_DIR"] = os.path.abspath(log_dir)
    return settings


SETTINGS_FILE = "s"  # in the attach's private directory; short, as the path travels in the bootstrap
LOADER_DIR = "w"     # the one directory the loader may write in (see _Session)
RESULT_SIZE_LIMIT = 65536


class _Session:
    """The private directories one attach uses to talk to its loader.

    ``directory`` is ours and only ours: the files we hand the loader (the bootstrap code)
    are made there. ``directory/w`` is where the loader writes: it claims the settings file
    by renaming it and reports its port (or error) there, so it must be the loader's.

    When we are root attaching to another user's process, the loader runs as that user,
    who must not be able to make us write, chown or read anything else. So we never act
    by path where that user can write: ``directory`` stays root's (0711: the loader can
    reach the names it is given, nobody can list it) and we work inside it by file
    descriptor; a file is made with O_EXCL|O_NOFOLLOW, filled, then handed over with
    fchown. ``w`` gets its settings file before ``w`` itself is handed over (again by
    fchown on an fd); afterwards we only read there (O_NOFOLLOW, regular files only, a
    bounded size) and finally remove the tree with shutil.rmtree, which walks by fd and
    never follows a symlink."""

    def __init__(self, pid: int):
        uid = target_uid(pid)
        self.uid = uid if uid is not None and uid != os.geteuid() else None
        # Short: the path travels in the bootstrap code.
        self.directory = tempfile.mkdtemp(prefix="fa-", dir=_temporary_root(self.uid))
        self._directory_fd = self._loader_fd = None
        try:
            self._directory_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            os.fchmod(self._directory_fd, 0o711 if self.uid is not None else 0o700)
            os.mkdir(LOADER_DIR, 0o700, dir_fd=self._directory_fd)
            self._loader_fd = os.open(LOADER_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                      dir_fd=self._directory_fd)
        except BaseException:
            self.close()
            raise
        loader_dir = os.path.join(self.directory, LOADER_DIR)
        self.settings = os.path.join(loader_dir, SETTINGS_FILE)
        self.port_file = os.path.join(loader_dir, "port")
        self.error_file = self.port_file + ".error"

    def _hand_over(self, fd: int, what: str) -> None:
        if self.uid is None:
            return
        try:
            os.fchown(fd, self.uid, -1)
        except PermissionError:
            raise AttachError("permission", f"the target runs as uid {self.uid}, so its loader could not read "
                                            f"{what}, and we (uid {os.geteuid()}) may not give files away; "
                                            f"attach as root or as uid {self.uid}") from None

    def write_settings(self, settings: dict) -> None:
        """Into ``w``, then ``w`` is the loader's: the settings are written before anyone else
        can put anything there."""
        self._create(self._loader_fd, SETTINGS_FILE, encode_fields(settings), "the attach settings")
        self._hand_over(self._loader_fd, "its directory")

    def write_private(self, name: str, text: str) -> str:
        """Put ``text`` in our directory as ``name``, readable by the loader's user only."""
        self._create(self._directory_fd, name, text, name)
        return os.path.join(self.directory, name)

    def _create(self, dir_fd: int, name: str, text: str, what: str) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o400 if self.uid is not None else 0o600)
            self._hand_over(fd, what)
        finally:
            os.close(fd)

    def _read_loader_file(self, name: str) -> str | None:
        """A file the loader wrote in ``w``, or None if there is none (yet). Whatever else
        is found there is refused, never followed or waited on: ``w`` is the loader's user's."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._loader_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AttachError("loader_failed", f"the loader's {name} file in {self.directory} cannot be read "
                                               f"safely ({exc.strerror}): something replaced it") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise AttachError("loader_failed", f"the loader's {name} file in {self.directory} is not a "
                                                   f"regular file: something replaced it")
            return os.read(fd, RESULT_SIZE_LIMIT).decode(errors="replace")
        finally:
            os.close(fd)

    def result(self, action: str | None = None) -> int | str | AttachError | None:
        """The port the loader reported (what it removed, for a stop; what it watches, for a
        probes-only attach), its error, or None while it has reported nothing."""
        error = self._read_loader_file(os.path.basename(self.error_file))
        if error is not None:
            info = decode_fields(error)  # the loader replaces it atomically: always whole
            return AttachError(info.get("reason", "injection_failed"), info.get("message", "the loader failed"))
        stopped = self._read_loader_file(os.path.basename(self.port_file) + STOPPED_SUFFIX)
        if stopped is not None:
            return stopped
        if action == "probes":
            return self.probes_summary()
        text = (self._read_loader_file(os.path.basename(self.port_file)) or "").strip()
        if text:
            if not text.isdigit() or not 0 < int(text) < 65536:
                return AttachError("loader_failed", f"the loader reported no port but {text[:40]!r}")
            return int(text)
        return None

    def probes_summary(self) -> str | None:
        """What the loader found watching the probe file (FASTATTACH_PROBES), once it has looked."""
        return self._read_loader_file(os.path.basename(self.port_file) + PROBES_SUFFIX)

    def started(self) -> bool:
        """The loader renames the settings file as its first act (see safe_attach_loader.py)."""
        try:
            os.stat(SETTINGS_FILE, dir_fd=self._loader_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return False

    def close(self) -> None:
        if self.uid is not None and self._loader_fd is not None:
            # Take ``w`` back first: its user could otherwise keep adding entries while we
            # remove them, and the tree would stay behind.
            try:
                os.fchown(self._loader_fd, os.geteuid(), -1)
                os.fchmod(self._loader_fd, 0o700)
            except OSError:
                pass
        for fd in (self._loader_fd, self._directory_fd):
            if fd is not None:
                os.close(fd)
        self._loader_fd = self._directory_fd = None
        shutil.rmtree(self.directory, ignore_errors=True)


def _temporary_root(other_uid: int | None) -> str:
    """Where to make the attach's directory: the usual temporary directory, unless the loader
    runs as another user who could not reach it (root's TMPDIR may be in its home)."""
    usual = tempfile.gettempdir()
    if other_uid is None or _searchable_by_everyone(usual):
        return usual
    if _searchable_by_everyone("/tmp"):
        return "/tmp"
    raise AttachError("permission", f"the target runs as uid {other_uid}, which cannot reach {usual} or /tmp "
                                    f"(a directory on the way is not searchable by others); set TMPDIR to a "
                                    f"directory every user can traverse and attach again")


def _searchable_by_everyone(path: str) -> bool:
    path = os.path.realpath(path)
    while True:
        try:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _wait(predicate, deadline: float) -> bool:
    delay = 0.0005
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.01)
    return True


def attach(pid: int, address=("127.0.0.1", 0), *, wait_for_client: bool = False, log_file: str | None = None,
           timeout: float = DEFAULT_TIMEOUT, secret: str | None = None, log_dir: str | None = None,
           loader: str | None = None, method: str = "auto", verbose: bool = True,
           report: dict | None = None, probes: str | None = None, _action: str | None = None) -> tuple[str, int]:
    """Start fastattach's listener inside the running process ``pid``; return (host, port).

    ``secret``: clients must present it (see fastattach.listen). ``log_file``: the loader's
    log; ``log_dir``: the target's debugger logs (fastattach.configure(log_dir=...) there).
    ``loader``: run this file
    instead of the packaged safe_attach_loader.py (also PTVS_SAFE_ATTACH_LOADER_OVERRIDE).
    ``method``: "auto" (mailbox or PEP 768 first, ptrace if the main thread does not pick it
    up), "mailbox" or "pep768" (the safe-point delivery of the target's version only, never
    ptrace; "pep768" insists on a 3.14+ target), or "ptrace" (inject at once). ``report``, if given, is
    filled with how it went: "method", and seconds until the loader started ("loader_started_s")
    and until it reported the port ("listening_s"), and with ``probes``, "probes": what the
    target found in the file. ``probes``: an absolute path; the target also watches that probe
    file (fastattach.probes.watch), reading it as its own user: we hand over its name only, so a
    root attach never opens a path the target's user controls. Raises AttachError.
    """
    started_at = time.monotonic()
    deadline = started_at + timeout
    host, port = parse_address(address)
    if probes is not None:
        _check_probe_path(probes)
    loader = os.path.abspath(loader or default_loader_path())
    if not os.path.isfile(loader):
        raise AttachError("loader_missing", f"loader file not found: {loader}")
    if method not in ("auto", "mailbox", "pep768", "ptrace"):
        raise ValueError(f"method must be 'auto', 'mailbox', 'pep768' or 'ptrace', not {method!r}")
    _runtime.check_process(pid)
    state = process_state(pid)
    if state.startswith(("Z", "X")) or state == "gone":
        raise AttachError("no_such_process", f"no such process: PID {pid} ({state})")
    runtime = _runtime.locate(pid)
    _runtime.check_supported(runtime)

    with _one_attach_at_a_time(pid, deadline):
        # Only under the lock: before it, a tracing stop may be another fastattach attach
        # injecting right now, which this one waits for instead of refusing.
        state = process_state(pid)
        if state.startswith(("T", "t")):
            raise AttachError("target_stopped", f"PID {pid} is stopped ({state}); resume it (kill -CONT {pid}) "
                                                f"and attach again")
        return _attach_locked(pid, runtime, host, port, loader, method, deadline, started_at, timeout,
                              wait_for_client=wait_for_client, log_file=log_file, verbose=verbose, secret=secret,
                              log_dir=log_dir, report=report, action=_action, probes=probes)


def _check_probe_path(path) -> None:
    """Only the name is checked here: the target reads the file, as its own user, from its own
    mount namespace, so a relative name (resolved against whose directory?) is refused."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise ValueError(f"the probe file must be a non-empty path, not {path!r}")
    if not os.path.isabs(path):
        raise ValueError(f"the probe file must be an absolute path, as the target sees it, not {path!r}: "
                         f"the target reads it, from its own working directory")


@contextlib.contextmanager
def _one_attach_at_a_time(pid: int, deadline: float):
    """Attaches to one PID take turns, whoever runs them: a target has one tracer at a time,
    and each later attach finds the listener the first one started (and reports it).

    The lock is a name in Linux's abstract socket namespace: no file another user could
    replace, and the kernel drops it when its holder exits, however it exits."""
    import socket

    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        while True:
            try:
                lock.bind(f"\0fastattach-attach-{pid}")
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise AttachError("injection_failed", f"cannot take the attach lock for PID {pid}: {exc}") from None
                if time.monotonic() >= deadline:
                    raise AttachError("timeout", f"another attach to PID {pid} was still running when this one "
                                                 f"timed out; try again when it is done") from None
                time.sleep(0.05)
        yield
    finally:
        lock.close()


def _attach_locked(pid, runtime, host, port, loader, method, deadline, started_at, timeout, *, wait_for_client,
                   log_file, verbose, secret, log_dir, report, action, probes=None) -> tuple[str, int]:
    session = _Session(pid)
    try:
        settings = _settings_payload(host, port, wait_for_client, log_file, session.port_file, verbose, secret,
                                     log_dir)
        if action is not None:
            settings["FASTATTACH_ACTION"] = action
        if probes is not None:
            settings["FASTATTACH_PROBES"] = probes
        session.write_settings(settings)
        delivered = _deliver(runtime, loader, session, method, deadline)
        loader_started = []

        def reported() -> bool:
            if not loader_started and session.started():
                loader_started.append(time.monotonic())
            return session.result(action) is not None or not _alive(pid)

        if not _wait(reported, deadline):
            raise AttachError("timeout", f"attach to PID {pid} timed out after {timeout:g} s: the loader was "
                                         f"delivered ({delivered}) but did not report a port; target state: "
                                         f"{process_state(pid)}, main thread in "
                                         f"{_injector.thread_syscall(pid, pid)}")
        result = session.result(action)
        if result is None:
            raise AttachError("no_such_process", f"PID {pid} exited during the attach")
        if isinstance(result, AttachError):
            raise result
        if isinstance(result, str) != (action in ("stop", "probes")):
            asked = {"stop": "stop", "probes": "watch a probe file"}.get(action, "listen")
            raise AttachError("loader_failed", f"the loader in PID {pid} answered {result!r}, not what was asked: "
                                               f"it is an older fastattach, which cannot {asked} by PID")
        if report is not None:
            report.update(method=delivered, loader_started_s=(loader_started or [time.monotonic()])[0] - started_at,
                          listening_s=time.monotonic() - started_at)
            if probes is not None:
                report["probes"] = result if action == "probes" else session.probes_summary()
        return host, result
    finally:
        session.close()


def _alive(pid: int) -> bool:
    return not process_state(pid).startswith(("Z", "X", "gone"))


def _deliver(runtime: _runtime.PythonRuntime, loader: str, session: _Session, method: str, deadline: float) -> str:
    """Get the loader running in the target; return which way worked."""
    pid = runtime.pid
    main_thread = _injector.thread_syscall(pid, pid)
    queued = False
    pep768_plan = None
    if method == "pep768" and runtime.version[:2] < (3, 14):
        raise AttachError("unsupported", f"PID {pid} runs Python {runtime.version_text}, which has no PEP 768 "
                                         f"(3.14+); use method 'auto' or 'mailbox'")
    safe_point_only = method in ("mailbox", "pep768")
    if runtime.version[:2] >= (3, 14):
        # Honour remote-debug-disabled for every way in, ptrace included: the owner of the
        # process said no remote debugging. This raises AttachError("remote_debug_disabled").
        _pep768.plan(lambda address, size: _runtime.read_memory(pid, address, size), runtime.runtime_address,
                     session.settings, pid)
    # A main thread that /proc shows blocked in a syscall will not run a queued call soon;
    # go straight to ptrace rather than spend the grace period waiting. (If it wakes up
    # meanwhile, the injector still only borrows it at a safe point.)
    if safe_point_only or (method == "auto" and main_thread == "running"):
        code = main_thread_bootstrap(loader, session.settings)
        if runtime.version[:2] >= (3, 14):
            pep768_plan = _post_pep768(runtime, session, code)
            queued = True
        elif _mailbox.has_layout(runtime):
            try:
                _mailbox.post(runtime, file_bootstrap(session.write_private("b", code)))
                queued = True
            except AttachError as exc:
                if safe_point_only or exc.reason in ("permission", "no_such_process"):
                    raise
        elif safe_point_only:
            raise AttachError("unsupported", f"no pending-call layout for Python {runtime.version_text}; "
                                             f"use the ptrace method")
        if queued:
            # A main thread blocked in native code will not pick it up; don't wait long for it.
            grace = deadline if safe_point_only else min(deadline, time.monotonic() + MAILBOX_GRACE)
            safe_point_method = "pep768" if runtime.version[:2] >= (3, 14) else "mailbox"
            if _wait(session.started, grace):
                return safe_point_method
            taken_unstarted = pep768_plan is not None and _pep768.taken(pid, pep768_plan)
            if pep768_plan is not None:
                # Withdraw it before the files go: a request taken later would make the target
                # print "Can't open debugger script" for the bootstrap we are about to delete.
                _pep768.retract(pid, pep768_plan)
            if session.started():
                return safe_point_method  # taken at the last moment: the loader runs after all
            if taken_unstarted and safe_point_only:
                raise AttachError("loader_failed", f"PID {pid} took the PEP 768 request but did not start the "
                                                   f"loader {loader}: the target could not run it (its stderr "
                                                   f"says why, e.g. a file it cannot read)")
            if safe_point_only:
                raise AttachError("no_safe_point", f"the main thread of PID {pid} never reached a safe point in "
                                                   f"time (it is in {main_thread}); the queued request is void and "
                                                   f"does nothing when the main thread returns to Python code")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AttachError("no_safe_point", f"the main thread of PID {pid} never reached a safe point in time "
                                           f"(it is in {main_thread})")
    _injector.inject(pid, agent_path(), python_module=runtime.module_path, timeout=remaining,
                     code_for_thread=lambda ident: bootstrap_code(loader, session.settings, ident))
    return "ptrace"


def _post_pep768(runtime: _runtime.PythonRuntime, session: _Session, code: str) -> _pep768.WritePlan:
    return _pep768.send(runtime.pid, runtime.runtime_address, session.write_private("bootstrap.py", code))


def stop(pid: int, *, timeout: float = DEFAULT_TIMEOUT, log_file: str | None = None,
         method: str = "auto") -> str:
    """fastattach.stop() inside the running process ``pid``, delivered as an attach is; returns
    what it removed (a sentence). A process without fastattach is left without it. Raises AttachError."""
    return attach(pid, log_file=log_file, timeout=timeout, method=method, _action="stop")[1]


def watch_probes(pid: int, path: str, *, timeout: float = DEFAULT_TIMEOUT, log_file: str | None = None,
                 method: str = "auto") -> str:
    """fastattach.probes.watch(path) inside the running process ``pid``, with no listener and
    no debugpy import there; returns what the target found in the file (a sentence). ``path`` is
    absolute, as the target sees it; the target reads it as its own user. Raises AttachError."""
    return attach(pid, log_file=log_file, timeout=timeout, method=method, probes=path, _action="probes")[1]


def cli_stop(pid: int, *, log_dir: str | None = None, timeout: float = DEFAULT_TIMEOUT, stdout=None,
             stderr=None) -> int:
    """``python -m fastattach --pid PID --stop``: print what was removed; exit code 0, or 1."""
    log_file = os.path.join(log_dir, f"fastattach-attach-{pid}.log") if log_dir else None
    try:
        summary = stop(pid, timeout=timeout, log_file=log_file)
    except AttachError as exc:
        print(f"fastattach: {exc}", file=stderr or sys.stderr)
        return 1
    print(f"fastattach: {summary}", file=stdout or sys.stdout, flush=True)
    return 0


def cli_attach(host: str | None, port: int | None, pid: int, *, wait_for_client: bool = False,
               log_dir: str | None = None, secret: str | None = None, probes: str | None = None,
               timeout: float = DEFAULT_TIMEOUT, stdout=None, stderr=None) -> int:
    """``python -m fastattach --listen [HOST:]PORT --pid PID [--probes PATH]``: print
    ``fastattach: listening on HOST:PORT in PID N`` on success (and, with ``probes``, what the
    target found in that file), or the error on stderr; return the exit code (0, or 1 on any
    AttachError). ``host`` None: ``--pid PID --probes PATH`` alone, probes only, no listener."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    log_file = os.path.join(log_dir, f"fastattach-attach-{pid}.log") if log_dir else None
    report: dict = {}
    try:
        if host is None:
            summary = watch_probes(pid, probes, log_file=log_file, timeout=timeout)
            print(f"fastattach: {summary}", file=stdout, flush=True)
            return 0
        bound_host, bound_port = attach(pid, (host, port), wait_for_client=wait_for_client, log_file=log_file,
                                        log_dir=log_dir, secret=secret, timeout=timeout, probes=probes,
                                        report=report)
    except (AttachError, ValueError) as exc:
        print(f"fastattach: {exc}", file=stderr)
        return 1
    print(f"fastattach: listening on {bound_host}:{bound_port} in PID {pid}", file=stdout, flush=True)
    if report.get("probes"):
        print(f"fastattach: {report['probes']}", file=stdout, flush=True)
    return 0

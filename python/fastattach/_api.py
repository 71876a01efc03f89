"""The public API, with debugpy's names: listen, wait_for_client, is_client_connected,
breakpoint, configure, plus stop(), which debugpy lacks.

One object, ``_Process``, owns this process's debugging session: the options, the
listener (net/) and the pydevd host (engine/). It is the only mutable module global. It
hands the listener an ``open_backend`` callable and the engine a ``notify`` callable, so
neither imports the other nor this module (as coverage's Collector wires its tracers).

Listening costs one idle thread and no sys.monitoring events: debugpy and pydevd are
imported only when the first client has authenticated (see engine/host.py).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from . import _exit_hook, _options
from ._address import parse_address

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 MB with its imports)
if TYPE_CHECKING:
    import socket

    from ._probe_config import ProbeFileWatcher
    from ._subprocess import Registry
    from .engine.host import PydevdHost
    from .engine.probes import ProbeEngine
    from .net.listener import Listener


class _Process:
    """This process's debugging session, from listen() to stop().

    Locks: ``_lock`` guards the listener (listen, stop); ``_host_lock`` guards the host,
    which the relay thread creates through ``open_backend`` while stop() may be closing
    the listener under ``_lock`` and waiting for that very thread.
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._host_lock = threading.RLock()
        self.options: dict = dict(_options.DEFAULTS)   # a snapshot: replaced, never changed
        self.listener: Listener | None = None
        self.host: PydevdHost | None = None             # made on the first authenticated attach
        self._hook_replaced = None                      # sys.breakpointhook before listen(), while ours is in
        # Always-on probes (fastattach.probes): independent of any client, and of stop().
        self._probe_lock = threading.RLock()
        self.probes: ProbeEngine | None = None          # made on the first probe
        self._probe_watchers: dict[str, ProbeFileWatcher] = {}
        # Child processes (see _subprocess.py): the registry while a client wants children, the
        # environment value it replaced, the TLS files children listen with, and whether
        # children stop at their first line (the parent was started with --wait-for-client).
        self._children: Registry | None = None
        self._children_environment_before: str | None = None
        self._children_environment_changed = False
        self._tls_files: tuple[str | None, str | None] = (None, None)
        self.children_stop_at_entry = False
        self.is_child = False   # this process's session was started for a parent's client

    # -- fork: a child never inherits the session ------------------------------------------
    def _after_fork_in_child(self) -> None:
        """Drop everything the parent's session owned, in the child, right after the fork.

        Runs before the child's first line of its own: sys.monitoring loses our callbacks and
        events first (PydevdHost.abandon_after_fork), then the listener's sockets are closed
        (the parent keeps its port). No lock of the parent's is taken: a thread that held one
        at the fork does not exist here, so the locks are made anew."""
        self._lock = threading.RLock()
        self._host_lock = threading.RLock()
        host, self.host = self.host, None
        listener, self.listener = self.listener, None
        children, self._children = self._children, None
        for owned in (host, listener, children):
            if owned is None:
                continue
            try:
                owned.abandon_after_fork()
            except Exception:   # the child must run on whatever happened to our state
                from ._log import logger  # RSS: the logger only for a child whose clean-up failed

                logger.exception("fastattach: could not drop the parent's %s in a forked child",
                                 type(owned).__name__)
        self._restore_breakpointhook()

    # -- breakpoint(): a no-op without a client, never pdb ---------------------------------
    def _install_breakpointhook(self) -> None:
        """Route breakpoint() to fastattach while listening, as debugpy's listen() does.

        Python's default hook would start pdb: a service then dies of BdbQuit (stdin closed) or
        blocks at the (Pdb) prompt. Left alone: an explicit PYTHONBREAKPOINT (the user chose a
        hook, or "0" for none) and a hook another tool has already installed."""
        if os.environ.get("PYTHONBREAKPOINT") or sys.breakpointhook is not sys.__breakpointhook__:
            return
        self._hook_replaced = sys.breakpointhook
        sys.breakpointhook = _breakpointhook

    def _reassert_breakpointhook(self) -> None:
        """Importing pydevd installs pydevd's own hook (debugpy's force_pydevd); ours stays."""
        if self._hook_replaced is not None and sys.breakpointhook is not _breakpointhook and (
                getattr(sys.breakpointhook, "__module__", "") in _PYDEVD_HOOK_MODULES):
            sys.breakpointhook = _breakpointhook

    def _restore_breakpointhook(self) -> None:
        previous, self._hook_replaced = self._hook_replaced, None
        if previous is None:
            return
        # Only undo our own (or pydevd's, set on import): a hook set since by someone else stays.
        if sys.breakpointhook is _breakpointhook or (
                getattr(sys.breakpointhook, "__module__", "") in _PYDEVD_HOOK_MODULES):
            sys.breakpointhook = previous

    # -- the network's view ----------------------------------------------------------------
    def listen(self, host: str, port: int, *, secret, certfile, keyfile, allow_unauthenticated) -> tuple[str, int]:
        from .net import listener, security  # RSS: the listener is paid for only by a process that listens

        with self._lock:
            if self.listener is not None:
                bound_host, bound_port = self.listener.address
                raise RuntimeError(f"fastattach is already listening on {bound_host}:{bound_port}; call stop() first")
            secret = security.resolve_secret(secret)
            ssl_context = security.server_ssl_context(certfile, keyfile)
            self.listener = listener.Listener(host, port, open_backend=self.open_backend,
                                              request_filter=self.filter_request, secret=secret,
                                              ssl_context=ssl_context, allow_unauthenticated=allow_unauthenticated,
                                              on_backend_done=self.backend_done,
                                              on_attached=self.client_attached, exit_code=self.exit_code)
            self._tls_files = (certfile, keyfile)
            self._install_breakpointhook()
            _exit_hook.install(self.process_exiting)
            address = self.listener.address
        self.watch_probes_from_environment()
        return address

    def process_exiting(self) -> None:
        """os._exit() was called (see _exit_hook.py): the client hears `terminated` first."""
        listener = self.listener
        if listener is not None:
            listener.process_exiting()

    def exit_code(self) -> int | None:
        """A child's client (subProcess) hears `exited` as the process ends, as from debugpy's
        launcher; the parent's does not, as from debugpy's attach."""
        return _exit_hook.exit_status() if self.is_child else None

    def open_backend(self) -> socket.socket:
        """Our end of a DAP connection to pydevd, for the relay thread of an authenticated client."""
        from .engine.host import PydevdHost  # RSS: debugpy and pydevd only once a client has authenticated

        with self._host_lock:
            if self.host is None:
                self.host = PydevdHost(self.options, notify=self.notify)
            session = self.host.open_session()
            self._reassert_breakpointhook()
            return session

    def backend_done(self) -> None:
        """A client's session with pydevd is over, normally or not: nothing may stay suspended."""
        self._close_children()
        with self._host_lock:
            host = self.host
            if host is not None:
                host.session_over()

    # -- child processes (subProcess, see _subprocess.py) ------------------------------------
    def client_attached(self, session) -> None:
        """A client's session started: with subProcess on (the option and its attach argument),
        children from now on register here and are announced to it; with it off they are not
        debugged (nor are they announced to the session of an ancestor: ENV is hidden)."""
        from . import _subprocess

        self._close_children()
        wanted = self.options["subProcess"] and session.attach_arguments.get("subProcess", True) is not False
        listener = self.listener
        self._children_environment_before = os.environ.get(_subprocess.ENV)
        self._children_environment_changed = True
        if not wanted or listener is None:
            os.environ.pop(_subprocess.ENV, None)
            return
        certfile, keyfile = self._tls_files
        registry = _subprocess.Registry(
            lambda child: self.child_registered(session, child), host=listener.address[0],
            grace_period=self.options["subprocess_grace_period"], entry=self.children_stop_at_entry,
            certfile=certfile and os.path.abspath(certfile), keyfile=keyfile and os.path.abspath(keyfile),
            options=_subprocess.transferable_options(self.options, _options.DEFAULTS))
        self._children = registry
        _subprocess.register_fork_hook()
        os.environ[_subprocess.ENV] = registry.environment_value

    def child_registered(self, session, child: dict) -> bool:
        """A child listens: its client is told how to attach to it (False: no client to tell)."""
        from . import _subprocess

        if not session.active:
            return False
        kind, name, body = _subprocess.announcement(session.attach_arguments, session.supports_start_debugging,
                                                    child)
        if kind == "request":
            session.inject_request(name, body)
        else:
            session.inject_event(name, body)
        return True

    def _close_children(self) -> None:
        from . import _subprocess

        registry, self._children = self._children, None
        changed, self._children_environment_changed = self._children_environment_changed, False
        # Only our own value is undone: one the program has set since stays.
        ours = registry.environment_value if registry is not None else None
        if changed and os.environ.get(_subprocess.ENV) == ours:
            if self._children_environment_before is None:
                os.environ.pop(_subprocess.ENV, None)
            else:
                os.environ[_subprocess.ENV] = self._children_environment_before
        if registry is not None:
            registry.close()

    def filter_request(self, message: dict):
        """Production mode's refusals (see engine/production.py); None outside production mode."""
        if not self.options["production"]:
            return None
        from .engine import production  # RSS: json and reprlib only once production mode filters a request

        return production.filter_request(message, self.notify)

    # -- the engine's view -----------------------------------------------------------------
    def notify(self, event: str, body: dict) -> None:
        listener = self.listener
        if listener is not None:
            listener.send_event(event, body)

    @property
    def gate(self):
        """The breakpoint filter in front of pydevd (engine.gate.Gate), or None."""
        host = self.host
        return host.gate if host is not None else None

    def break_at(self, frame) -> None:
        """Stop at the next line `frame` runs, if a client is attached; never in production mode."""
        host = self.host
        if host is not None and self.client_connected:
            host.break_at(frame)

    @property
    def client_connected(self) -> bool:
        listener = self.listener
        return listener is not None and listener.client_connected

    # -- always-on probes (fastattach.probes) --------------------------------------------------
    def probe_engine(self) -> ProbeEngine:
        with self._probe_lock:
            if self.probes is None:
                from .engine.probes import ProbeEngine  # RSS: the probe engine only for a process with probes

                self.probes = ProbeEngine(lambda: self.options)
            return self.probes

    def watch_probes(self, path) -> None:
        from ._probe_config import ProbeFileWatcher  # RSS: json and hashlib only for a process with a probe file

        with self._probe_lock:
            watcher = ProbeFileWatcher(path, self.probe_engine)
            if watcher.path in self._probe_watchers:
                return
            self._probe_watchers[watcher.path] = watcher
        watcher.start()

    def unwatch_probes(self, path=None) -> None:
        with self._probe_lock:
            if path is None:
                chosen = list(self._probe_watchers.values())
                self._probe_watchers.clear()
            else:
                watcher = self._probe_watchers.pop(os.path.abspath(os.fspath(path)), None)
                chosen = [] if watcher is None else [watcher]
        for watcher in chosen:
            watcher.stop()
            watcher.remove_probes()

    def watch_probes_from_environment(self) -> None:
        """FASTATTACH_PROBES=PATH: watch PATH (python -m fastattach and listen() call this)."""
        path = os.environ.get("FASTATTACH_PROBES")
        if path:
            self.watch_probes(path)

    def clear_probes(self) -> None:
        self.unwatch_probes()
        with self._probe_lock:
            engine = self.probes
        if engine is not None:
            engine.close()

    # -- options ---------------------------------------------------------------------------
    def configure(self, changes: dict) -> None:
        with self._host_lock:
            previous, self.options = self.options, _options.replace(self.options, changes)
            host = self.host
            budgets_changed = any(previous[name] != self.options[name] for name in _options.BUDGET_OPTIONS)
            if host is not None and budgets_changed:
                host.options_changed(self.options)
            elif host is not None:
                host.options = self.options
            probes = self.probes
            if probes is not None and budgets_changed:
                probes.options_changed(self.options)
        if previous["subProcess"] and not self.options["subProcess"]:
            self._close_children()   # children started from now on are not debugged

    # -- per-thread control -----------------------------------------------------------------
    def trace_this_thread(self, should_trace: bool) -> None:
        host = self.host
        if host is not None:
            host.trace_this_thread(should_trace)

    def debug_this_thread(self) -> None:
        host = self.host
        if host is not None:
            host.debug_this_thread()

    # -- teardown --------------------------------------------------------------------------
    def stop_after_reply(self) -> None:
        """stop() once the client has been sent the answer to the request running now (the
        debug console's evaluate of fastattach.stop()), on a thread of its own: stopping from
        inside that request would close the session before pydevd answers it."""
        listener = self.listener
        if listener is None:
            return
        answered_before = listener.responses_relayed
        self.notify("output", {"category": "console",
                               "output": "fastattach: stopping: this session ends and the debugger is removed\n"})

        def stop_when_answered() -> None:
            deadline = time.monotonic() + 5.0
            while listener.responses_relayed == answered_before and time.monotonic() < deadline:
                time.sleep(0.01)
            self.stop()

        from .net.sockets import start_service_thread  # RSS: loaded already, with the listener

        start_service_thread(stop_when_answered, "fastattach.stop")

    def stop(self) -> None:
        """The reverse of listen() and open_backend(): first the listener (the client is
        disconnected, so pydevd gets a disconnect and suspended threads resume), then the
        host (see PydevdHost.close for its order). Options stay as configured."""
        with self._lock:
            listener, self.listener = self.listener, None
            _exit_hook.uninstall()
            self._close_children()
            if listener is not None:
                listener.close()
            self._restore_breakpointhook()
            with self._host_lock:
                host, self.host = self.host, None
            if host is not None:
                host.close()


# Where pydevd's sys.breakpointhook comes from when its import installs one (pydevd.py, or
# debugpy's force_pydevd on top of it).
_PYDEVD_HOOK_MODULES = frozenset({"pydevd", "debugpy._vendored.force_pydevd"})


def _breakpointhook(*args, **kwargs) -> None:
    """sys.breakpointhook while listening: fastattach.breakpoint() (no-op without a client)."""
    try:
        _process.break_at(sys._getframe(1))
    except Exception:   # a debugger fault must not become the program's exception
        import logging

        logging.getLogger("fastattach").exception("fastattach: breakpoint() could not stop")


_process = _Process()
# Once, for the one session of the process (a fork handler cannot be unregistered).
os.register_at_fork(after_in_child=lambda: _process._after_fork_in_child())


def session() -> _Process:
    """This process's session object (for the loader, tests, benchmarks and the demo)."""
    return _process


def listening_address() -> tuple[str, int] | None:
    """The (host, port) this process listens on, or None."""
    listener = _process.listener
    return None if listener is None else tuple(listener.address)


def listen(address=5678, *, secret: str | None = None, certfile: str | None = None, keyfile: str | None = None,
           allow_unauthenticated: bool = False) -> tuple[str, int]:
    """Start listening for a DAP client; returns the (host, port) actually bound.

    ``address`` is a port or ``(host, port)``; the host defaults to 127.0.0.1 and port 0
    picks a free port.  The secret falls back to the FASTATTACH_SECRET environment variable.
    Binding to a non-loopback address without a secret is refused unless
    ``allow_unauthenticated=True``.
    """
    host, port = parse_address(address)
    return _process.listen(host, port, secret=secret, certfile=certfile, keyfile=keyfile,
                           allow_unauthenticated=allow_unauthenticated)


class _WaitForClient:
    """``wait_for_client()``, and ``wait_for_client.cancel()`` as in debugpy: another thread
    may end a wait that no client will end (debugpy's API; without it the waiting thread
    could only be freed by a client)."""

    def __init__(self):
        self._cancel_event: threading.Event | None = None   # the newest wait's

    def __call__(self, timeout: float | None = None) -> bool:
        """Block until a client has attached and finished configuration (configurationDone).

        Returns False if ``timeout`` (seconds) passed first or cancel() was called.
        """
        listener = _process.listener
        if listener is None:
            raise RuntimeError("fastattach is not listening: call fastattach.listen() first")
        cancelled = self._cancel_event = threading.Event()
        # Wait in slices so that cancel() frees us within one slice; the listener's event
        # is the only one a client sets, and it must not be set by a cancel.
        slice_seconds = 0.05
        deadline = None if timeout is None else time.monotonic() + timeout
        while not cancelled.is_set() and not listener.closed:   # stop() ends the wait too
            remaining = slice_seconds if deadline is None else min(slice_seconds, deadline - time.monotonic())
            if remaining <= 0:
                return listener.wait_configured(0)
            if listener.wait_configured(remaining):
                return True
        return False

    def cancel(self) -> None:
        """End the current wait_for_client() (it returns False); from any thread.

        As in debugpy, RuntimeError if wait_for_client() was never called.
        """
        cancelled = self._cancel_event
        if cancelled is None:
            raise RuntimeError("wait_for_client() must be called first")
        cancelled.set()


wait_for_client = _WaitForClient()


def is_client_connected() -> bool:
    return _process.client_connected


def breakpoint() -> None:
    """Stop in the caller, as if a breakpoint were set on its next line; no-op without a client."""
    _process.break_at(sys._getframe(1))


def break_at(frame) -> None:
    """Stop at the next line `frame` runs (the loader aims below its own frames with this)."""
    _process.break_at(frame)


def breakpoint_filter_stats() -> dict[str, int] | None:
    """The C breakpoint filter's event counters (events seen, answered in C, forwarded to
    pydevd, ...), or None while no client session has installed it (no client yet, after
    stop(), or a pydevd whose seam did not match, which then runs unmodified)."""
    gate = _process.gate
    return dict(gate.tracer.stats()) if gate is not None else None


def stop() -> None:
    """Disconnect any client, stop listening, and remove every sys.monitoring callback and
    event that pydevd and we registered, freeing the tool id: overhead returns to none.
    listen() works again afterwards.

    Call it from a thread the debugger does not trace (or with no client holding the
    program at a breakpoint): with "stop all threads" on, a stop suspends the caller too.
    Called from the client's debug console, it returns at once and stops once the client
    has its answer.
    """
    if _process.client_connected and "fastattach.engine.seam" in sys.modules:
        from .engine import seam  # RSS: loaded already, with pydevd

        if seam.in_client_evaluation():
            _process.stop_after_reply()
            return
    _process.stop()


def configure(properties: dict | None = None, **options) -> None:
    """Set options for this process's debugger (see README for the list).

    As debugpy's configure(), takes a dict, keywords, or both. debugpy's names are accepted
    where fastattach honours the value (``subProcess=False``, ``qt="none"``); any other
    value, and ``python``, ``pythonEnv``, ``pythonArgs``, is a ValueError that says what
    fastattach does instead.
    """
    changes = dict(properties or {})
    changes.update(options)
    _process.configure(changes)


def log_to(path) -> None:
    """debugpy's log_to(): write debugpy's and pydevd's logs to the directory ``path``, or,
    given ``sys.stderr``, debugpy's log to stderr. Takes effect when pydevd starts (at the
    first client); once it has started, it applies to the next session (after stop())."""
    if path is sys.stderr:
        configure(log_to_stderr=True)
    else:
        import os

        configure(log_dir=os.path.abspath(os.fspath(path)))


def trace_this_thread(should_trace: bool) -> None:
    """debugpy's trace_this_thread(): stop (False) or resume (True) debugging this thread.
    A no-op while no client session has started pydevd."""
    _process.trace_this_thread(bool(should_trace))


def debug_this_thread() -> None:
    """debugpy's debug_this_thread(): debug this thread, made outside ``threading`` (a
    ctypes or Qt thread), which pydevd does not see. A no-op while no client session has
    started pydevd."""
    _process.debug_this_thread()


def get_option(name: str):
    return _process.options[name]

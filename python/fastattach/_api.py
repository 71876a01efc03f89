"""The public API, with debugpy's names: listen, wait_for_client, is_client_connected,
breakpoint, configure, plus stop(), which debugpy lacks.

Listening costs one idle thread and no sys.monitoring events: debugpy and pydevd are
imported only when the first client has authenticated (see _pydevd_host).
"""

from __future__ import annotations

import sys
import threading

DEFAULT_HOST = "127.0.0.1"

_lock = threading.RLock()
_listener = None


def _parse_address(address) -> tuple[str, int]:
    if isinstance(address, tuple):
        if len(address) != 2:
            raise ValueError(f"address must be a port or (host, port), not {address!r}")
        host, port = address
    else:
        host, port = DEFAULT_HOST, address
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"port must be an integer, not {port!r}")
    if not 0 <= port < 65536:
        raise ValueError(f"port {port} is out of range (0-65535; 0 picks a free port)")
    return host, port


def listen(address=5678, *, secret: str | None = None, certfile: str | None = None, keyfile: str | None = None,
           allow_unauthenticated: bool = False) -> tuple[str, int]:
    """Start listening for a DAP client; returns the (host, port) actually bound.

    ``address`` is a port or ``(host, port)``; the host defaults to 127.0.0.1 and port 0
    picks a free port.  The secret falls back to the FASTATTACH_SECRET environment variable.
    Binding to a non-loopback address without a secret is refused unless
    ``allow_unauthenticated=True``.
    """
    global _listener
    from . import _security, _server

    host, port = _parse_address(address)
    with _lock:
        if _listener is not None:
            bound_host, bound_port = _listener.address
            raise RuntimeError(f"fastattach is already listening on {bound_host}:{bound_port}; call stop() first")
        secret = _security.resolve_secret(secret)
        ssl_context = _security.server_ssl_context(certfile, keyfile)
        _listener = _server.Listener(host, port, secret=secret, ssl_context=ssl_context,
                                     allow_unauthenticated=allow_unauthenticated)
        return _listener.address


def _require_listener():
    listener = _listener
    if listener is None:
        raise RuntimeError("fastattach is not listening: call fastattach.listen() first")
    return listener


def wait_for_client(timeout: float | None = None) -> bool:
    """Block until a client has attached and finished configuration (configurationDone).

    Returns False if ``timeout`` (seconds) passed first.
    """
    return _require_listener().wait_configured(timeout)


def is_client_connected() -> bool:
    listener = _listener
    return listener is not None and listener.client_connected


def breakpoint() -> None:
    """Stop in the caller, as if a breakpoint were set on its next line; no-op without a client."""
    from . import _pydevd_host

    if not is_client_connected() or not _pydevd_host.is_started() or get_option("production"):
        return   # production mode never suspends a thread
    import pydevd

    pydevd.settrace(
        suspend=True,
        trace_only_current_thread=True,
        patch_multiprocessing=False,
        stop_at_frame=sys._getframe(1),
        notify_stdin=False,
    )


def stop() -> None:
    """Disconnect any client, stop listening, and remove every sys.monitoring callback and
    event that pydevd and we registered, freeing the tool id: overhead returns to none.
    listen() works again afterwards.

    Call it from a thread the debugger does not trace (or with no client holding the
    program at a breakpoint): with "stop all threads" on, a stop suspends the caller too.
    """
    from . import _pydevd_host

    global _listener
    with _lock:
        listener, _listener = _listener, None
        if listener is not None:
            listener.close()
        _pydevd_host.shutdown()


# Options and their defaults; configure() validates against this table.  Budget and
# production options (validated by _budget.validate_option; see docs/production.md) join
# it on first use, so that importing fastattach and listening does not load _budget.
_OPTIONS: dict[str, object] = {
    "log_dir": None,
}
_BUDGET_DEFAULTS: dict[str, object] = {}


def _options() -> dict[str, object]:
    if not _BUDGET_DEFAULTS:
        from ._budget import DEFAULTS

        _BUDGET_DEFAULTS.update(DEFAULTS)
        for name, value in DEFAULTS.items():
            _OPTIONS.setdefault(name, value)
    return _OPTIONS


def configure(**options) -> None:
    """Set options for this process's debugger (see README for the list)."""
    from . import _budget, _pydevd_host

    known = _options()
    for name, value in options.items():
        if name not in known:
            raise ValueError(f"unknown fastattach option {name!r}; known: {', '.join(sorted(known))}")
    options = {name: _budget.validate_option(name, value) if name in _BUDGET_DEFAULTS else value
               for name, value in options.items()}
    budget_changed = False
    for name, value in options.items():
        budget_changed |= name in _BUDGET_DEFAULTS and _OPTIONS[name] != value
        _OPTIONS[name] = value
        if name == "log_dir":
            _pydevd_host.set_log_dir(value)
    if options.get("production"):
        from . import _production, _server

        _server.REQUEST_FILTER = _production.filter_request
    if budget_changed:
        _budget.options_changed()


def get_option(name: str):
    return _options()[name]

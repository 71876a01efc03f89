"""fastattach: a Python debugger you can leave on in production.

debugpy's API (listen, wait_for_client and wait_for_client.cancel, is_client_connected,
breakpoint, configure, log_to, trace_this_thread, debug_this_thread),
plus stop(), attach() to a running process, breakpoint_filter_stats() (what the C filter
answered itself), and ptvsd's API for old code.
"""

from ._api import (
    breakpoint,
    breakpoint_filter_stats,
    configure,
    debug_this_thread,
    is_client_connected,
    listen,
    log_to,
    stop,
    trace_this_thread,
    wait_for_client,
)
from ._ptvsd import break_into_debugger, enable_attach, is_attached, wait_for_attach


def __getattr__(name):
    # fastattach.attach is a callable subpackage (attach(pid, address, ...)), loaded on
    # first use so that importing fastattach does not load cffi.
    if name == "attach":
        import importlib

        return importlib.import_module(".attach", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["attach", "break_into_debugger", "breakpoint", "breakpoint_filter_stats", "configure", "debug_this_thread",
           "enable_attach", "is_attached", "is_client_connected", "listen", "log_to", "stop", "trace_this_thread",
           "wait_for_attach", "wait_for_client"]
__version__ = "0.1.0"

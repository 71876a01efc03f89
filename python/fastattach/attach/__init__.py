"""Attach fastattach to a running CPython process by PID, without gdb and without a restart.

``attach(pid, address)`` makes the target run ``fastattach/safe_attach_loader.py``, which
starts fastattach's listener there, and returns the (host, port) to connect a DAP client to.
``cli_attach`` is the ``python -m fastattach --listen [HOST:]PORT --pid PID`` entry point.
"""

from ._errors import AttachError
from ._orchestrator import DEFAULT_TIMEOUT, attach, cli_attach, cli_stop, stop, watch_probes

__all__ = ["AttachError", "DEFAULT_TIMEOUT", "attach", "cli_attach", "cli_stop", "stop", "watch_probes"]


class _CallableModule(type(__import__("sys"))):
    """Makes ``fastattach.attach(pid, address, ...)`` call :func:`attach`, as the package's
    API promises, while ``fastattach.attach`` stays the subpackage."""

    def __call__(self, *args, **kwargs):
        return attach(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule

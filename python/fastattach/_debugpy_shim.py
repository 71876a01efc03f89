"""A program written for debugpy, run under `python -m fastattach`, gets fastattach's API.

The program's `import debugpy` still imports the real debugpy (fastattach's pydevd lives
inside it), but its public functions (debugpy/public_api.py) become fastattach's:
listen() while the command line listens already is a no-op that returns that address (the
command line's --listen wins, and one log line says so); wait_for_client(),
is_client_connected(), breakpoint(), configure(), log_to(), trace_this_thread() and
debug_this_thread() are fastattach's; connect() is refused with what to do instead.
fastattach itself never calls those functions of debugpy's (engine/host.py calls
debugpy.server.api), so the patch cannot loop back into us.

Nothing is imported here before the program imports debugpy: a meta path finder waits for it.
See docs/debugpy-compat.md.
"""

from __future__ import annotations

import sys

from . import _api
from ._log import logger

CONNECT_REFUSED = ("debugpy.connect() is not supported under fastattach: fastattach listens (the command line's "
                   "--listen, or fastattach.listen()) and the client attaches to it")


def listen(address=5678, *, in_process_debug_adapter: bool = False):
    """debugpy.listen(): fastattach's listen(), or, while fastattach listens already, that address."""
    bound = _api.listening_address()
    if bound is not None:
        logger.info("fastattach: the program's debugpy.listen(%r) is served by fastattach's listener on %s:%s",
                    address, *bound)
        return bound
    return _api.listen(address)


def connect(*args, **kwargs):
    raise RuntimeError(CONNECT_REFUSED)


def _replacements() -> dict:
    return {"listen": listen, "connect": connect, "wait_for_client": _api.wait_for_client,
            "is_client_connected": _api.is_client_connected, "breakpoint": _api.breakpoint,
            "configure": _api.configure, "log_to": _api.log_to, "trace_this_thread": _api.trace_this_thread,
            "debug_this_thread": _api.debug_this_thread}


def patch(debugpy_module) -> None:
    """debugpy's public functions on `debugpy_module` become fastattach's."""
    for name, replacement in _replacements().items():
        setattr(debugpy_module, name, replacement)
    debugpy_module.__fastattach_patched__ = True


class _DebugpyImportWatcher:
    """A sys.meta_path finder that finds nothing itself: it lets the real finders find
    debugpy, and patches the module once it has run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "debugpy":
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            patch(module)

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """From now on the program's debugpy is fastattach (patched now, if imported already)."""
    module = sys.modules.get("debugpy")
    if module is not None:
        patch(module)
    elif not any(isinstance(finder, _DebugpyImportWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DebugpyImportWatcher())

"""Always-on probes: log messages and snapshots at a file and line, with no client and no pydevd.

    import fastattach.probes
    probe_id = fastattach.probes.add("app/orders.py", 42, log="order {order.id} total={total}")
    fastattach.probes.add("app/orders.py", 57, snapshot=True, condition="total > 1000", expires=600)
    fastattach.probes.list()
    fastattach.probes.remove(probe_id)
    fastattach.probes.watch("/etc/myservice/probes.json")   # or FASTATTACH_PROBES=PATH

Output goes to the ``fastattach.probe`` logger, as production mode's does (see docs/probes.md
for the records' fields); each probe has production mode's budgets and expires after
``expires`` seconds (default one hour; 0 = never). A probe never stops a thread. The probes run
on a sys.monitoring tool id of their own (engine/probes.py), next to any debugger session.

File names are absolute or relative to any ``sys.path`` entry; ``set_path_mappings()`` (or a
probe file's ``pathMappings``) rewrites a deployment's paths as a DAP client's pathMappings do.
"""

from __future__ import annotations

import time

from . import _probe_config
from ._api import session
from ._probe_config import DEFAULT_EXPIRY, ProbeError

__all__ = ["ProbeError", "add", "clear", "list", "remove", "set_path_mappings", "unwatch", "watch"]

_builtin_list = list
_path_mappings: list[tuple[str, str]] = []


def add(file, line: int, *, log: str | None = None, snapshot: bool = False, condition: str | None = None,
        expires: float = DEFAULT_EXPIRY, id: str | None = None) -> str:   # noqa: A002 - the issue's name
    """Set a probe at ``file``:``line`` and return its id (``id``, or a new one).

    Exactly one action: ``log``, a message with ``{expr}`` templates as in a logpoint, or
    ``snapshot=True``, the stack and locals as production mode captures them. ``condition``
    is a Python expression; the probe acts only where it is true. ``expires`` is in seconds
    (0 = never). A probe with the id of an existing one replaces it. ProbeError (a
    ValueError) says what is wrong: a file not found, a line with no code, a template or
    condition that does not compile.
    """
    probe = _probe_config.make_probe(file, line, log=log, snapshot=snapshot, condition=condition, expires=expires,
                                     probe_id=id, created=time.monotonic(), mappings=_path_mappings)
    session().probe_engine().set([probe])
    return probe.probe_id


def remove(probe_id: str) -> bool:
    """Remove a probe; False if no probe has that id (it may have expired)."""
    return bool(session().probe_engine().remove([probe_id]))


def list() -> list[dict]:   # noqa: A001 - the issue's name
    """Every probe: id, file (as given), path (as resolved), line, log, snapshot, condition,
    expires and expires_in (seconds left, None for never)."""
    return [probe.describe() for probe in session().probe_engine().list()]


def clear() -> None:
    """Stop watching every probe file and remove every probe: the probes' tool id is freed."""
    session().clear_probes()


def set_path_mappings(mappings) -> None:
    """Rewrite probe file names as a DAP client's ``pathMappings`` do: a list of
    ``{"localRoot": ..., "remoteRoot": ...}``; a file under localRoot is looked for under
    remoteRoot. Applies to probes added with add() from now on (a probe file has its own)."""
    global _path_mappings
    _path_mappings = _probe_config.parse_mappings(mappings, "pathMappings")


def watch(path) -> None:
    """Keep this process's probes in step with the JSON probe file at ``path`` (docs/probes.md):
    an edit takes effect within about a second. The file may be missing or invalid at first;
    its probes appear once it is good. Watching a file twice is watching it once."""
    session().watch_probes(path)


def unwatch(path=None) -> None:
    """Stop watching ``path`` (every file if None) and remove the probes it set."""
    session().unwatch_probes(path)

"""The listener's answers to `fastattachProbes` requests: add, list and remove probes over the network.

The relay (net/relay.py) authenticates the request as it does an attach and checks its shape
(net/request_shapes.py); what is left is here. A probe added this way belongs to the process,
as one added with fastattach.probes.add() does: it stays after the client disconnects.
Answered without pydevd: a process with probes only never imports debugpy.
"""

from __future__ import annotations

from . import probes

COMMANDS = ("add", "list", "remove")
# The fields each command takes besides `command` (the secret is gone by now).
_FIELDS = {
    "add": {"file", "line", "log", "snapshot", "condition", "expires", "id"},
    "list": set(),
    "remove": {"id"},
}


def answer(arguments: dict) -> dict:
    """The response body for the request's ``arguments``; ValueError (its text for the client)
    for an unknown command or field, a probe that cannot be set, an unknown id."""
    command = arguments.get("command")
    if command not in _FIELDS:
        raise ValueError(f"unknown probe command {str(command)[:40]!r}: expected one of {', '.join(COMMANDS)}")
    unknown = sorted(set(arguments) - _FIELDS[command] - {"command"})
    if unknown:
        known = ", ".join(sorted(_FIELDS[command])) or "none"
        raise ValueError(f"'{command}' takes no field {unknown[0][:40]!r} (it takes: {known})")
    if command == "list":
        return {"probes": probes.list()}
    if command == "remove":
        probe_id = arguments.get("id")
        if not probe_id:
            raise ValueError("'remove' needs the id of the probe to remove")
        if not probes.remove(probe_id):
            raise ValueError(f"no probe with id {probe_id!r} (see 'list'; it may have expired)")
        return {"removed": probe_id}
    for field in ("file", "line"):
        if field not in arguments:
            raise ValueError(f"'add' needs the field {field!r}")
    probe_id = probes.add(arguments["file"], arguments["line"], log=arguments.get("log"),
                          snapshot=arguments.get("snapshot", False), condition=arguments.get("condition"),
                          expires=arguments.get("expires", probes.DEFAULT_EXPIRY), id=arguments.get("id"))
    described = next((probe for probe in probes.list() if probe["id"] == probe_id), None)
    if described is None:   # expired or removed between the two calls: say what was asked for
        raise ValueError(f"probe {probe_id!r} was set but is gone already")
    return {"probe": described}

"""Check a recorded DAP session against the DAP JSON schema and the seq rules.

The schema is the ``debugProtocol.json`` that the installed debugpy wheel ships, so the
check needs nothing beyond PyPI. Each message is validated against its most specific
definition (``SetBreakpointsRequest``, ``StoppedEvent``, ``ErrorResponse`` for a failed
response, ...); commands and events the schema does not know (debugpy's own
``debugpy*`` events) are checked against the generic ``Request``/``Response``/``Event``
and listed in ``notes``.

Sequencing, per connection and sender: ``seq`` starts anywhere but then goes up by
exactly one (no duplicates, no gaps, never backwards), every response answers an open
request of the same command from the other side, and every request gets its answer.

Two input forms are accepted:
- ``DAPClient.transcript``: ``(direction, message, time)`` with direction ``"send"``
  (client to server) or ``"recv"``;
- a tap log (``tests/_tap.py``): dicts ``{"conn", "dir": "c2s"|"s2c", "msg"}``, or the
  JSONL file holding them.
"""

from __future__ import annotations

import collections
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

CLIENT = "client"
SERVER = "server"
_SENDERS = {"send": CLIENT, "c2s": CLIENT, "recv": SERVER, "s2c": SERVER}


@dataclass
class Record:
    conn: int
    sender: str  # CLIENT or SERVER
    message: dict
    framing_error: str | None = None  # the tap could not parse this part of the stream


@dataclass
class Report:
    messages: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        lines = [f"{self.messages} messages, {len(self.errors)} errors"]
        lines += [f"ERROR: {e}" for e in self.errors]
        lines += [f"NOTE: {n}" for n in self.notes]
        return "\n".join(lines)


def schema_path() -> Path:
    """The DAP schema inside the installed debugpy (the revision debugpy itself follows)."""
    import debugpy

    path = Path(os.path.dirname(debugpy.__file__), "_vendored", "pydevd", "_pydevd_bundle",
                "_debug_adapter", "debugProtocol.json")
    if not path.is_file():
        raise FileNotFoundError(f"debugpy {debugpy.__version__} no longer ships the DAP schema at {path}")
    return path


@functools.cache
def _schema() -> dict:
    return json.loads(schema_path().read_text(encoding="utf-8"))


@functools.cache
def _validator(definition: str) -> jsonschema.Draft4Validator:
    # A copy of the whole document, so "#/definitions/..." references still resolve.
    root = dict(_schema())
    root["$ref"] = "#/definitions/" + definition
    return jsonschema.Draft4Validator(root)


def _capitalised(name: str) -> str:
    return name[:1].upper() + name[1:]


def definition_for(message: dict) -> tuple[str, bool]:
    """(definition name, whether the schema has a specific one) for a message."""
    kind = message.get("type")
    if kind == "request":
        specific = _capitalised(str(message.get("command", ""))) + "Request"
    elif kind == "response":
        if message.get("success") is False:
            specific = "ErrorResponse"
        else:
            specific = _capitalised(str(message.get("command", ""))) + "Response"
    elif kind == "event":
        specific = _capitalised(str(message.get("event", ""))) + "Event"
    else:
        return "ProtocolMessage", False
    definitions = _schema()["definitions"]
    if specific in definitions:
        return specific, True
    return _capitalised(kind), False


def records_from(source) -> list[Record]:
    """Normalise a DAPClient transcript, a list of tap records, or a tap JSONL path."""
    if isinstance(source, (str, Path)):
        with open(source, encoding="utf-8") as log:
            source = [json.loads(line) for line in log if line.strip()]
    records = []
    for item in source:
        if isinstance(item, Record):
            records.append(item)
        elif isinstance(item, dict):
            records.append(Record(item.get("conn", 1), _SENDERS[item["dir"]], item.get("msg", {}),
                                  item.get("framing_error")))
        else:
            direction, message, *_ = item
            records.append(Record(1, _SENDERS[direction], message))
    return records


def validate(source, *, allow_reordering: bool = False) -> Report:
    """Check every message; ``allow_reordering`` is for plain debugpy only.

    debugpy 1.8.22 now and then writes two messages in the opposite order of their seq
    (research/dap-clients.md section 7). With ``allow_reordering`` that is a note, and
    the seqs must still form a run with no duplicates or gaps; fastattach's relay
    renumbers, so it is always held to the strict order.
    """
    report = Report()
    last_seq: dict[tuple[int, str], int] = {}
    all_seqs: dict[tuple[int, str], list[int]] = {}
    open_requests: dict[tuple[int, str, int], str] = {}
    terminated: set[int] = set()
    for index, record in enumerate(records_from(source)):
        message, sender = record.message, record.sender
        if record.framing_error:
            report.errors.append(f"#{index} {sender}: unparseable stream: {record.framing_error}")
            continue
        report.messages += 1
        where = f"#{index} {sender} {_describe(message)}"
        definition, specific = definition_for(message)
        if not specific:
            report.notes.append(f"{where}: not in the schema, checked as generic {definition}")
        for error in _validator(definition).iter_errors(message):
            path = "/".join(str(p) for p in error.absolute_path)
            report.errors.append(f"{where}: {definition} at /{path}: {error.message[:300]}")

        seq = message.get("seq")
        key = (record.conn, sender)
        if isinstance(seq, int):
            previous = last_seq.get(key)
            if previous is not None and seq != previous + 1:
                problem = "duplicate" if seq == previous else "out of order" if seq < previous else "gap"
                (report.notes if allow_reordering else report.errors).append(
                    f"{where}: seq {seq} after {previous} ({problem})")
            last_seq[key] = seq
            all_seqs.setdefault(key, []).append(seq)

        kind = message.get("type")
        if kind == "event" and sender == SERVER and message.get("event") == "terminated":
            terminated.add(record.conn)
        if kind == "request" and isinstance(seq, int):
            open_requests[(record.conn, sender, seq)] = message.get("command")
        elif kind == "response":
            other = SERVER if sender == CLIENT else CLIENT
            asked = open_requests.pop((record.conn, other, message.get("request_seq")), None)
            if asked is None:
                report.errors.append(f"{where}: request_seq {message.get('request_seq')} answers no open request")
            elif asked != message.get("command"):
                report.errors.append(f"{where}: answers a {asked!r} request with command {message.get('command')!r}")
    if allow_reordering:
        for (conn, sender), seqs in all_seqs.items():
            duplicates = sorted(s for s, n in collections.Counter(seqs).items() if n > 1)
            if duplicates:
                report.errors.append(f"connection {conn}: {sender} sent duplicate seq {duplicates[:10]}")
            missing = sorted(set(range(min(seqs), max(seqs) + 1)) - set(seqs))
            if missing:
                report.errors.append(f"connection {conn}: {sender} seq has gaps, missing {missing[:10]}")
    for (conn, sender, seq), command in open_requests.items():
        problem = f"connection {conn}: {sender} request {command!r} seq {seq} never answered"
        # fastattach lives in the debuggee: once the program has ended (the server said
        # "terminated"), the socket closes with the process, and a final disconnect may
        # find nobody left to answer it.
        if command == "disconnect" and sender == CLIENT and conn in terminated:
            report.notes.append(problem + " (after the server's terminated event)")
        else:
            report.errors.append(problem)
    return report


def assert_valid(source, *, allow_reordering: bool = False) -> Report:
    report = validate(source, allow_reordering=allow_reordering)
    assert report.ok, f"DAP session breaks the schema or the seq rules:\n{report}"
    return report


def _describe(message: dict) -> str:
    kind = message.get("type")
    name = message.get("event") if kind == "event" else message.get("command")
    return f"{kind} {name} seq={message.get('seq')}"

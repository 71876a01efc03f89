"""Probe definitions: checking one, resolving its file, the probe file's format, watching it, and
the answers to a probe client's requests (python -m fastattach probe).

Used by the public fastattach.probes and by the session (_api._Process, which watches the file
named by FASTATTACH_PROBES); it hands probes to engine/probes.py's ProbeEngine, which it gets
from the ``engine()`` callable it is given, and imports neither the API nor the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
import uuid

from .engine.probes import Probe, ProbeError, lines_with_code

log = logging.getLogger("fastattach")

DEFAULT_EXPIRY = 3600.0
# How often a watched file is looked at; an edit takes effect within this plus one read.
WATCH_INTERVAL = 0.5
ENVIRONMENT_VARIABLE = "FASTATTACH_PROBES"


def parse_mappings(mappings, where: str) -> list[tuple[str, str]]:
    if mappings is None:
        return []
    if not isinstance(mappings, (list, tuple)):
        raise ProbeError(f"{where} must be a list of {{\"localRoot\": ..., \"remoteRoot\": ...}}")
    parsed = []
    for i, mapping in enumerate(mappings):
        if not isinstance(mapping, dict) or not all(isinstance(mapping.get(key), str) and mapping.get(key)
                                                    for key in ("localRoot", "remoteRoot")):
            raise ProbeError(f"{where}[{i}] must have non-empty string fields localRoot and remoteRoot")
        parsed.append((mapping["localRoot"], mapping["remoteRoot"]))
    return parsed


def _mapped(file: str, mappings) -> str:
    for local, remote in mappings:
        local_root = local.rstrip("/\\")
        if file == local_root or file.startswith(local_root + "/") or file.startswith(local_root + "\\"):
            return remote.rstrip("/\\") + file[len(local_root):].replace("\\", "/")
    return file


def resolve_file(file, mappings=()) -> str:
    """The real path of a probe's file: absolute, or relative to a sys.path entry, after the
    path mappings. ProbeError if there is no such file."""
    if not isinstance(file, (str, os.PathLike)) or not os.fspath(file):
        raise ProbeError(f"file must be a non-empty path, not {file!r}")
    name = _mapped(os.fspath(file), mappings)
    if os.path.isabs(name):
        candidates = [name]
    else:
        candidates = [os.path.join(entry or os.getcwd(), name) for entry in sys.path if isinstance(entry, str)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.realpath(candidate)
    where = "" if os.path.isabs(name) else " under any sys.path entry"
    mapped = f" (mapped to {name!r})" if name != os.fspath(file) else ""
    raise ProbeError(f"file {os.fspath(file)!r}{mapped}: no such file{where}")


def make_probe(file, line, *, log, snapshot, condition, expires, probe_id, created, mappings=()) -> Probe:
    """A checked Probe; ProbeError names the probe and what is wrong with it."""
    if probe_id is None:
        probe_id = f"probe-{uuid.uuid4().hex[:12]}"
    elif not isinstance(probe_id, str) or not probe_id:
        raise ProbeError(f"id must be a non-empty string, not {probe_id!r}")
    where = f"probe {probe_id!r}"
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        raise ProbeError(f"{where}: line must be an integer >= 1, not {line!r}")
    if (log is None) == (not snapshot):
        raise ProbeError(f"{where}: give exactly one action, log=MESSAGE or snapshot=True")
    if log is not None and not isinstance(log, str):
        raise ProbeError(f"{where}: log must be a string, not {log!r}")
    if not isinstance(snapshot, bool):
        raise ProbeError(f"{where}: snapshot must be true or false, not {snapshot!r}")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not 0 <= expires < float("inf"):
        raise ProbeError(f"{where}: expires must be a number of seconds >= 0 (0 = never), not {expires!r}")
    if condition is not None:
        if not isinstance(condition, str) or not condition.strip():
            raise ProbeError(f"{where}: condition must be a non-empty string, not {condition!r}")
        try:
            compile(condition, "<probe condition>", "eval")
        except (SyntaxError, ValueError) as exc:
            raise ProbeError(f"{where}: condition {condition!r} is not a Python expression: "
                             f"{getattr(exc, 'msg', exc)}") from None
    try:
        path = resolve_file(file, mappings)
    except ProbeError as exc:
        raise ProbeError(f"{where}: {exc}") from None
    try:
        code_lines = lines_with_code(path)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ProbeError(f"{where}: cannot read {path} as Python: {exc}") from None
    if line not in code_lines:
        after = [n for n in sorted(code_lines) if n > line][:1]
        hint = f"; the next line with code is {after[0]}" if after else ""
        raise ProbeError(f"{where}: line {line} of {path} has no code (blank, a comment, or part of a "
                         f"statement that starts earlier){hint}")
    try:
        return Probe(probe_id, os.fspath(file), path, line, log=log, snapshot=snapshot, condition=condition,
                     expires=float(expires), created=created)
    except ProbeError as exc:
        raise ProbeError(f"{where}: {exc}") from None


# -- a probe client's requests --------------------------------------------------------------
# A probe added this way belongs to the process, as one added with fastattach.probes.add() does:
# it stays after the client disconnects. Answered without pydevd.

PROBE_COMMANDS = ("add", "list", "remove")
# The fields each command takes besides `command` (the secret is gone by now).
_REQUEST_FIELDS = {
    "add": {"file", "line", "log", "snapshot", "condition", "expires", "id"},
    "list": set(),
    "remove": {"id"},
}


def answer_request(arguments: dict, engine) -> dict:
    """The response body for a `fastattachProbes` request's ``arguments`` (python -m fastattach
    probe add, list, remove), acting on ``engine``, the session's ProbeEngine, as fastattach.probes
    does. The relay (net/relay.py) has authenticated the request as it does an attach and checked
    its shape (net/request_shapes.py). ValueError, its text for the client: an unknown command or
    field, a probe that cannot be set, an unknown id. ``file`` is resolved as add() resolves it
    (absolute, or under a sys.path entry), without the API's path mappings: the client names the
    file as this process sees it."""
    command = arguments.get("command")
    if command not in _REQUEST_FIELDS:
        raise ValueError(f"unknown probe command {str(command)[:40]!r}: expected one of {', '.join(PROBE_COMMANDS)}")
    unknown = sorted(set(arguments) - _REQUEST_FIELDS[command] - {"command"})
    if unknown:
        known = ", ".join(sorted(_REQUEST_FIELDS[command])) or "none"
        raise ValueError(f"'{command}' takes no field {unknown[0][:40]!r} (it takes: {known})")
    if command == "list":
        return {"probes": [probe.describe() for probe in engine.list()]}
    if command == "remove":
        probe_id = arguments.get("id")
        if not probe_id:
            raise ValueError("'remove' needs the id of the probe to remove")
        if not engine.remove([probe_id]):
            raise ValueError(f"no probe with id {probe_id!r} (see 'list'; it may have expired)")
        return {"removed": probe_id}
    for field in ("file", "line"):
        if field not in arguments:
            raise ValueError(f"'add' needs the field {field!r}")
    probe = make_probe(arguments["file"], arguments["line"], log=arguments.get("log"),
                       snapshot=arguments.get("snapshot", False), condition=arguments.get("condition"),
                       expires=arguments.get("expires", DEFAULT_EXPIRY), probe_id=arguments.get("id"),
                       created=time.monotonic())
    engine.set([probe])
    return {"probe": probe.describe()}


# -- the probe file -------------------------------------------------------------------------

_FIELDS = {"id", "file", "line", "log", "snapshot", "condition", "expires"}


def parse_probe_file(text: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """The probe definitions and path mappings of a probe file's text.

    ``{"pathMappings": [...], "probes": [{"id", "file", "line", "log" | "snapshot", "condition",
    "expires"}, ...]}``. ProbeError names the line (for JSON syntax) or the field at fault.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbeError(f"line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise ProbeError("the file must hold a JSON object: {\"probes\": [...]}")
    unknown = set(document) - {"probes", "pathMappings"}
    if unknown:
        raise ProbeError(f"unknown top-level field {sorted(unknown)[0]!r} (known: probes, pathMappings)")
    mappings = parse_mappings(document.get("pathMappings"), "pathMappings")
    probes = document.get("probes", [])
    if not isinstance(probes, list):
        raise ProbeError("\"probes\" must be a list")
    seen = set()
    definitions = []
    for i, entry in enumerate(probes):
        where = f"probes[{i}]"
        if not isinstance(entry, dict):
            raise ProbeError(f"{where} must be an object")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ProbeError(f"{where}: unknown field {sorted(unknown)[0]!r} (known: {', '.join(sorted(_FIELDS))})")
        for name in ("id", "file", "line"):
            if name not in entry:
                raise ProbeError(f"{where}: missing field {name!r}")
        if not isinstance(entry["id"], str) or not entry["id"]:
            raise ProbeError(f"{where}: field 'id' must be a non-empty string")
        where = f"{where} (id {entry['id']!r})"
        if entry["id"] in seen:
            raise ProbeError(f"{where}: the id is used twice")
        seen.add(entry["id"])
        if not isinstance(entry["file"], str) or not entry["file"]:
            raise ProbeError(f"{where}: field 'file' must be a non-empty string")
        if isinstance(entry["line"], bool) or not isinstance(entry["line"], int) or entry["line"] < 1:
            raise ProbeError(f"{where}: field 'line' must be an integer >= 1, not {entry['line']!r}")
        has_log, snapshot = "log" in entry, entry.get("snapshot", False)
        if has_log and not isinstance(entry["log"], str):
            raise ProbeError(f"{where}: field 'log' must be a string")
        if not isinstance(snapshot, bool):
            raise ProbeError(f"{where}: field 'snapshot' must be true or false")
        if has_log == snapshot:
            raise ProbeError(f"{where}: give exactly one of 'log' or \"snapshot\": true")
        if "condition" in entry and not (isinstance(entry["condition"], str) and entry["condition"].strip()):
            raise ProbeError(f"{where}: field 'condition' must be a non-empty string")
        expires = entry.get("expires", DEFAULT_EXPIRY)
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires < 0:
            raise ProbeError(f"{where}: field 'expires' must be a number of seconds >= 0 (0 = never)")
        definitions.append(entry)
    return definitions, mappings


class ProbeFileWatcher:
    """Keeps the probes of one file in step with it: a thread that polls it every
    WATCH_INTERVAL seconds. An edit adds, changes and removes probes; a file that cannot be
    read or parsed keeps the last good probes and logs one error (once per bad content)."""

    def __init__(self, path: str, engine):
        self._engine = engine
        self.path = os.path.abspath(os.fspath(path))
        self._applied: dict[str, str] = {}         # probe id -> its definition's digest
        self._first_seen: dict[str, float] = {}     # digest -> monotonic time it was first applied
        self._last_signature = None
        self._last_error = None
        self._stop = threading.Event()
        self.reloads = 0
        self._refused: list[str] = []   # the last good version's probes that could not be set, and why
        self._thread = threading.Thread(target=self._run, name="fastattach-probe-file", daemon=True)
        self._thread.pydev_do_not_trace = True
        self._thread.is_pydev_daemon_thread = True

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(5)

    def summary(self) -> str:
        """What the last look at the file found, in a sentence."""
        count = len(self._applied)
        text = f"{count} probe{'' if count == 1 else 's'} set"
        if self._refused:
            text += f"; not set: {'; '.join(self._refused)}"
        if self._last_error is not None:
            text += f"; the file is not usable ({self._last_error}): watching it until it is"
        return text

    def remove_probes(self) -> None:
        self._engine().remove(list(self._applied))
        self._applied.clear()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                self.check()
            except Exception:   # the watcher must outlive anything a file can do to it
                log.exception("fastattach: watching the probe file %s failed", self.path)

    def _signature(self):
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return ("error", type(exc).__name__, str(exc))
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check(self) -> None:
        """Read the file again if it changed since the last look."""
        signature = self._signature()
        if signature == self._last_signature:
            return
        self._last_signature = signature
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            self._error(f"cannot read it: {exc}")
            return
        try:
            definitions, mappings = parse_probe_file(text)
        except ProbeError as exc:
            self._error(str(exc))
            return
        self._last_error = None
        self._apply(definitions, mappings)

    def _error(self, text: str) -> None:
        if text != self._last_error:
            self._last_error = text
            kept = len(self._applied)
            log.error("fastattach: probe file %s: %s; keeping the %d probe%s from its last good version",
                      self.path, text, kept, "" if kept == 1 else "s")

    def _apply(self, definitions: list[dict], mappings) -> None:
        engine = self._engine()
        now = time.monotonic()
        wanted: dict[str, str] = {}
        new_probes = []
        refused = []
        for entry in definitions:
            digest = hashlib.sha256(json.dumps([entry, mappings], sort_keys=True).encode()).hexdigest()
            wanted[entry["id"]] = digest
            first_seen = self._first_seen.setdefault(digest, now)
            if self._applied.get(entry["id"]) == digest and engine.get(entry["id"]) is not None:
                continue   # unchanged
            expires = float(entry.get("expires", DEFAULT_EXPIRY))
            if expires > 0 and first_seen + expires <= now:
                continue   # it expired; an edit of the probe makes it a new one
            try:
                new_probes.append(make_probe(entry["file"], entry["line"], log=entry.get("log"),
                                              snapshot=entry.get("snapshot", False),
                                              condition=entry.get("condition"), expires=expires,
                                              probe_id=entry["id"], created=first_seen, mappings=mappings))
            except ProbeError as exc:
                log.error("fastattach: probe file %s: %s; this probe is not set", self.path, exc)
                refused.append(str(exc))
                wanted.pop(entry["id"])
        gone = [probe_id for probe_id in self._applied if probe_id not in wanted]
        if gone:
            engine.remove(gone)
        if new_probes:
            engine.set(new_probes)
        self._applied = {probe.probe_id: wanted[probe.probe_id] for probe in new_probes}
        self._applied.update({probe_id: digest for probe_id, digest in wanted.items()
                              if probe_id not in self._applied and engine.get(probe_id) is not None})
        self._first_seen = {digest: seen for digest, seen in self._first_seen.items() if digest in wanted.values()}
        self._refused = refused
        self.reloads += 1
        log.info("fastattach: probe file %s: %d probe%s set (%d new or changed, %d removed)", self.path,
                 len(self._applied), "" if len(self._applied) == 1 else "s", len(new_probes), len(gone))

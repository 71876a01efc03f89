"""Checks an authenticated client's request against the DAP schema before pydevd reads it.

pydevd's reader thread dies on a request whose fields have the wrong type (a `source.path`
that is a number, a `line` that is a string, `breakpoints` that is a string, a
`sourceReference` of 2**70, ...), and with it the session: every thread it suspended stays
suspended. debugpy's adapter answers such requests with an error; so does the relay, with
the message `check_request` returns.

The rules are the DAP schema's (the ``debugProtocol.json`` and ``debugProtocolCustom.json``
that debugpy ships; read on the first authenticated request, never by a process nobody
attaches to), with what the schema leaves open and pydevd relies on: integers a JSON client
can send exactly (within 2**53), no NUL in a path, and the shapes of debugpy's own attach
arguments (``pathMappings``, ``debugOptions``) and of ``setDebuggerProperty``'s patterns.
fastattach's own requests (``fastattachProbes``) have their shapes here, in ``_OWN_REQUESTS``.
Only types and required fields are checked: the schema's open enums (``_enum``) and unknown
properties are what real clients send, and pydevd accepts them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os

from .._log import logger

# Beyond this an integer is no longer exact in the JavaScript number a DAP client uses, and
# pydevd's C parts overflow on it.
_MAX_INTEGER = 2**53
_STRING_ARRAY = {"type": "array", "items": {"type": "string"}}
# Where the schema says nothing (debugpy's own attach arguments) or too little (arrays whose
# items it does not describe), what pydevd's handlers need; by request, then argument.
_SUPPLEMENTS = {
    "attach": {
        "pathMappings": {"type": "array", "items": {
            "type": "object", "properties": {"localRoot": {"type": "string"}, "remoteRoot": {"type": "string"}}}},
        "debugOptions": _STRING_ARRAY,
    },
    "setDebuggerProperty": {
        "dontTraceStartPatterns": _STRING_ARRAY,
        "dontTraceEndPatterns": _STRING_ARRAY,
        "skipSuspendOnBreakpointException": _STRING_ARRAY,
        "skipPrintBreakpointException": _STRING_ARRAY,
    },
}
# fastattach's own requests, which no DAP schema describes (see handshake.PROBES_COMMAND).
_OWN_REQUESTS = {
    "fastattachProbes": {"type": "object", "required": ["arguments"], "properties": {"arguments": {
        "type": "object", "required": ["command"], "properties": {
            "command": {"type": "string"}, "id": {"type": "string"}, "file": {"type": "string"},
            "line": {"type": "integer"}, "log": {"type": "string"}, "snapshot": {"type": "boolean"},
            "condition": {"type": "string"}, "expires": {"type": "number"},
        }}}},
}
_JSON_TYPES = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "null": lambda value: value is None,
}


class _BadShape(Exception):
    """The first thing wrong with a request, named by its JSON path."""


def check_request(request: dict) -> str | None:
    """None if pydevd can take `request`, else the error message its response carries."""
    try:
        _check(request)
    except _BadShape as problem:
        return f"invalid '{request.get('command')}' request: {problem}"
    except RecursionError:
        return f"invalid '{request.get('command')}' request: nested too deeply"
    return None


# debugpy's adapter reads these without a threadId as every thread (adapter.py does the same).
_THREAD_ID_OPTIONAL = frozenset({"continue", "pause"})


def _check(request: dict) -> None:
    definitions = _definitions()
    command = request["command"]
    arguments = request.get("arguments")
    if command in _THREAD_ID_OPTIONAL and isinstance(arguments, dict) and "threadId" not in arguments:
        request = {**request, "arguments": {**arguments, "threadId": 0}}
    name = command[:1].upper() + command[1:] + "Request"
    if command in _OWN_REQUESTS:
        _validate(request, _OWN_REQUESTS[command], definitions, "request")
    elif name in definitions:
        _validate(request, definitions[name], definitions, "request")
    arguments = request.get("arguments")
    if isinstance(arguments, dict):
        for field, schema in _SUPPLEMENTS.get(command, {}).items():
            if field in arguments:
                _validate(arguments[field], schema, definitions, f"arguments.{field}")
    _check_values(request, "request")


def _check_values(value, where: str) -> None:
    """What no schema says: integers a client can send exactly, paths without NUL."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and "\0" in item and (key.lower().endswith(("path", "root")) or key == "program"):
                raise _BadShape(f"{where}.{key} contains a NUL character")
            _check_values(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_values(item, f"{where}[{index}]")
    elif isinstance(value, int) and not isinstance(value, bool) and not -_MAX_INTEGER <= value <= _MAX_INTEGER:
        raise _BadShape(f"{where} is out of range ({value.bit_length()}-bit integer)")


def _validate(value, schema: dict, definitions: dict, where: str) -> None:
    reference = schema.get("$ref")
    if reference is not None:
        target = definitions.get(reference.rpartition("/")[2])
        if target is not None:
            _validate(value, target, definitions, where)
    for part in schema.get("allOf", ()):
        _validate(value, part, definitions, where)
    choices = schema.get("oneOf") or schema.get("anyOf")
    if choices:
        problems = []
        for choice in choices:
            try:
                _validate(value, choice, definitions, where)
                break
            except _BadShape as problem:
                problems.append(problem)
        else:
            raise problems[0]
    expected = schema.get("type")
    if expected is not None:
        allowed = [expected] if isinstance(expected, str) else expected
        if not any(_JSON_TYPES.get(kind, lambda _: True)(value) for kind in allowed):
            raise _BadShape(f"{where} must be {' or '.join(allowed)}, not {_json_type(value)}")
    if isinstance(value, dict):
        for field in schema.get("required", ()):
            if field not in value:
                raise _BadShape(f"{where}.{field} is required")
        for field, field_schema in schema.get("properties", {}).items():
            if field in value:
                _validate(value[field], field_schema, definitions, f"{where}.{field}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _validate(item, schema["items"], definitions, f"{where}[{index}]")


def _json_type(value) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object", "null"):
        if _JSON_TYPES[name](value):
            return name
    return type(value).__name__


@functools.cache
def _definitions() -> dict:
    """The schema's definitions, read once from the installed debugpy; {} without it."""
    spec = importlib.util.find_spec("debugpy")
    if spec is None or spec.origin is None:
        logger.warning("fastattach: debugpy not found: requests are not checked against the DAP schema")
        return {}
    folder = os.path.join(os.path.dirname(spec.origin), "_vendored", "pydevd", "_pydevd_bundle", "_debug_adapter")
    definitions: dict = {}
    for name in ("debugProtocol.json", "debugProtocolCustom.json"):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as schema:
                definitions.update(json.load(schema)["definitions"])
        except (OSError, ValueError, KeyError) as error:
            logger.warning("fastattach: cannot read the DAP schema %s (%s): requests are checked less", name, error)
    return definitions

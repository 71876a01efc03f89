"""Production mode: breakpoints never suspend a thread; a hit takes a bounded snapshot.

With ``configure(production=True)`` (or ``--production``):

* every line breakpoint becomes a snapshot probe: C checks its budget, then calls
  ``BudgetSupervisor.probe`` (budgets.py) instead of pydevd, which captures the stack and the locals of the top
  frames (repr- and size-limited, 32 KB in all by default) and sends them to the client
  as an ``output`` event and/or a ``fastattach.snapshot`` event, and to the
  ``fastattach.probe`` logger;
* the relay refuses pause and stepping requests (and function, data and instruction
  breakpoints), and ``terminate`` (which would end the live process), and drops
  exception-breakpoint filters and a disconnect's ``terminateDebuggee``, with a message saying why
  (``filter_request``, which the owner of the session hands the listener);
* as a last line of defence, pydevd's ``set_suspend`` / ``do_wait_suspend`` do nothing
  (seam.py, ``install_suspend_guard``);
* breakpoints expire after ``production_expiry`` seconds (default one hour).
"""

from __future__ import annotations

import json
import logging
import threading
import time

from . import otel, redact

log = logging.getLogger("fastattach")
probe_log = logging.getLogger("fastattach.probe")

_CO_OPTIMIZED = 0x0001   # inspect.CO_OPTIMIZED: a function frame, whose locals are not its globals
# Room kept for the output event's prefix and the truncation markers.
_SLACK_BYTES = 160

REFUSED_REQUESTS = {
    "pause": "pausing",
    "next": "stepping",
    "stepIn": "stepping",
    "stepOut": "stepping",
    "stepBack": "stepping",
    "reverseContinue": "reverse execution",
    "goto": "jumping to a line",
    "restartFrame": "restarting a frame",
}
# Requests refused only when they would set something that suspends.
_REFUSED_WHEN_NONEMPTY = {
    "setFunctionBreakpoints": ("breakpoints", "function breakpoints"),
    "setDataBreakpoints": ("breakpoints", "data breakpoints"),
    "setInstructionBreakpoints": ("breakpoints", "instruction breakpoints"),
}
WHY = ("fastattach is in production mode: {what} is refused because it would suspend threads of a live "
       "process. Line breakpoints take a snapshot (stack and locals) instead of stopping; logpoints log.")
# Not a suspension, but worse for a service: pydevd answers `terminate` by killing the process.
WHY_TERMINATE = ("fastattach is in production mode: terminate is refused because it would end the live "
                 "process. Disconnect to detach; the process keeps running.")


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


_encode_str = json.encoder.encode_basestring_ascii   # what json.dumps writes for a str (C speedup)


def capture(frame, *, breakpoint_id, file: str, line: int, max_bytes: int, frames: int, depth: int,
            repr_chars: int, rules: redact.Rules | None = None) -> dict:
    """A JSON-ready snapshot of frame's thread whose compact JSON is at most max_bytes long.

    Stack entries for up to ``depth`` frames, then the locals of the top ``frames`` frames,
    each value a repr of at most ``repr_chars`` characters; what does not fit is left
    out and ``truncated`` says so.  Values redact.Rules hides (by default the default
    redact_names) show as ``<redacted>``; ``redacted`` counts them.
    """
    if rules is None:
        rules = redact.DEFAULT_RULES
    budget = max_bytes - _SLACK_BYTES
    thread = threading.current_thread()
    snap = {"breakpointId": breakpoint_id, "file": file, "line": line, "thread": thread.name,
            "threadId": thread.ident, "time": round(time.time(), 6), "stack": [], "frames": [],
            "truncated": False, "redacted": 0}
    used = len(_dumps(snap))
    truncated = False
    f, n = frame, 0
    while f is not None and n < depth:
        code = f.f_code
        entry = {"name": code.co_qualname, "file": code.co_filename, "line": f.f_lineno}
        # {"name":...,"file":...,"line":N}, plus a comma
        cost = len(_encode_str(entry["name"])) + len(_encode_str(entry["file"])) + len(str(entry["line"])) + 27
        if used + cost > budget:
            truncated = True
            break
        snap["stack"].append(entry)
        used += cost
        f, n = f.f_back, n + 1
    if f is not None:
        truncated = True   # deeper than depth
    r = redact.RedactingRepr(rules, repr_chars)
    f = frame
    for _ in range(frames):
        if f is None or truncated and used >= budget:
            break
        module_level = f.f_locals is f.f_globals if f.f_code.co_flags & _CO_OPTIMIZED == 0 else False
        entry = {"name": f.f_code.co_qualname, "line": f.f_lineno, "locals": {}}
        if module_level:
            entry["globalsOmitted"] = True   # a module's "locals" are all its globals
        cost = len(_dumps(entry)) + 1
        if used + cost > budget:
            truncated = True
            break
        snap["frames"].append(entry)
        used += cost
        variables = entry["locals"]
        for name, value in [] if module_level else list(f.f_locals.items()):
            text = r.hide() if rules.hides(name, value) else redact.safe_repr(r, value, repr_chars)
            cost = len(_encode_str(str(name))) + len(_encode_str(text)) + 2
            if used + cost > budget:
                truncated = True
                continue   # a shorter one may still fit
            variables[str(name)] = text
            used += cost
        f = f.f_back
    snap["truncated"] = truncated
    # Counts what was hidden, including values hidden and then left out for size: the
    # reader learns that something secret was there either way.
    snap["redacted"] = r.redacted
    return snap


def snapshot_hit(spec, frame, o: dict, notify) -> int:
    """Serve a production breakpoint's hit (called by BudgetSupervisor.probe) under options `o`: bytes sent."""
    max_bytes = o["snapshot_max_bytes"]
    snap = capture(frame, breakpoint_id=spec.breakpoint_id, file=spec.file, line=spec.line, max_bytes=max_bytes,
                   frames=o["snapshot_frames"], depth=o["snapshot_stack_depth"], repr_chars=o["snapshot_repr_chars"],
                   rules=redact.rules_for(o))
    text = _dumps(snap)
    while len(text) > max_bytes - _SLACK_BYTES // 2 and (snap["frames"] or snap["stack"]):
        (snap["frames"] or snap["stack"]).pop()   # cannot happen with the accounting above; stay bounded anyway
        snap["truncated"] = True
        text = _dumps(snap)
    mode = o["snapshot_output"]
    if mode in ("output", "both"):
        notify("output", {"category": "console", "output": f"fastattach snapshot: {text}\n"})
    if mode in ("event", "both"):
        notify("fastattach.snapshot", snap)
    emit_probe_record(o, f"snapshot at {spec.file}:{spec.line}", {
        "probe_kind": "snapshot", "probe_breakpoint_id": spec.breakpoint_id, "probe_file": spec.file,
        "probe_line": spec.line, "probe_thread": snap["thread"], "probe_snapshot": snap,
        "probe_redacted": snap["redacted"],
    })
    return len(text)


def emit_probe_record(o: dict, message: str, fields: dict) -> None:
    """The one output seam of probe records (logpoint messages, snapshots, probes): the
    ``fastattach.probe`` logger with ``fields`` as its record's ``extra``, when
    ``probe_logging`` is on; and OpenTelemetry, when the application uses it (otel.py).
    ``message`` and ``fields`` hold redacted values only (redact.py).  Runs on the user's
    thread inside the probe; the caller turns what it raises into a probe error, never into
    the user's frame."""
    if o["probe_logging"]:
        probe_log.info("%s", message, extra=fields)
    otel.emit(o, message, fields)


# -- the relay's request filter, while production mode is on -------------------------------

def filter_request(message: dict, notify):
    """None to forward a client request unchanged, a str to refuse it with that message, or a
    rewritten request to forward instead. `notify(event, body)` tells the client what was dropped."""
    command = message.get("command")
    if command in REFUSED_REQUESTS:
        return WHY.format(what=REFUSED_REQUESTS[command])
    if command == "terminate":
        return WHY_TERMINATE
    arguments = message.get("arguments") or {}
    if command in _REFUSED_WHEN_NONEMPTY:
        key, what = _REFUSED_WHEN_NONEMPTY[command]
        if arguments.get(key):
            return WHY.format(what=f"setting {what}")
    if command == "disconnect" and arguments.get("terminateDebuggee"):
        # Refusing a disconnect would leave the client stuck; detaching is what is safe.
        notify("output", {"category": "console", "output": (
            "fastattach: production mode detaches without ending the process (terminateDebuggee is "
            "ignored).\n")})
        rewritten = dict(message)
        rewritten["arguments"] = dict(arguments, terminateDebuggee=False)
        return rewritten
    if command == "setExceptionBreakpoints" and (
            arguments.get("filters") or arguments.get("filterOptions") or arguments.get("exceptionOptions")):
        notify("output", {"category": "console", "output": (
            "fastattach: production mode ignores exception breakpoints (they would suspend threads of a live "
            "process).\n")})
        rewritten = dict(message)
        rewritten["arguments"] = {"filters": []}
        return rewritten
    return None

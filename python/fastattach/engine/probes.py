"""Always-on probes: logpoints and snapshots that need no client and no pydevd.

A probe runs on the C engine (``_fasttrace.Tracer(probes=True)``, whose per-code tables
live in a code-extra slot of their own) under a sys.monitoring tool id of its own, never
the debugger's (STYLE.md section 3): so probes and a debugger session, ours or another
tool's, coexist, and a process with probes only never imports debugpy. A probe never
stops a thread.

While at least one probe exists the tool has global PY_START. The first PY_START of a code
object asks ``_compute`` once (per probe change) whether a probe's file and line are in it:
if not, C answers DISABLE and the code costs nothing from then on; if so, ``_arm`` turns on
LINE for that code only, and C answers DISABLE for every line but the probe's. A hit goes
through the probe's ``_fasttrace.Budget`` (the production budgets: rate, bytes, time) to
``ProbeBudgets.probe``, which is budgets.py's ``BudgetSupervisor.probe``: the same log
message and snapshot code, and the same ``fastattach.probe`` logging records, as production
mode. Removing the last probe frees the tool id: the process is back where it started.

Probes are defined by the public module fastattach.probes; this module knows nothing of
files to watch, the network or the API.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref

from .. import _fasttrace
from . import superinstructions
from .budgets import BudgetSupervisor
from .gate import clear_tool

log = logging.getLogger("fastattach")
probe_log = logging.getLogger("fastattach.probe")

TOOL_NAME = "fastattach-probes"
# Never DEBUGGER_ID (0): debugpy, pdb (3.14) and other vendors' live debuggers take it. 1 is
# coverage and 2 cProfile; 3 is coverage's under metacov, so 4 first (STYLE.md section 3).
PREFERRED_TOOL_IDS = (4, 3)

_monitoring = sys.monitoring
_events = _monitoring.events


class ProbeError(ValueError):
    """A probe that cannot be set: its message names the probe and the field at fault."""


# -- log templates ---------------------------------------------------------------------------

def template_expression(template: str) -> str:
    """The Python expression that renders a ``{expr}`` log template, as a logpoint does.

    ``{{`` and ``}}`` stand for braces; every ``{expr}`` becomes ``str(expr)``. The result is
    what pydevd makes of a DAP logMessage (convert_dap_log_message_to_expression), written
    here so that probes need no pydevd. ProbeError for unbalanced braces or an expression
    that does not compile.
    """
    literal, expressions, i = [], [], 0
    while i < len(template):
        char = template[i]
        if char in "{}" and template[i + 1:i + 2] == char:
            literal.append(char.replace("%", "%%"))
            i += 2
            continue
        if char == "}":
            raise ProbeError(f"log template {template!r}: '}}' at position {i} closes nothing (write '}}}}')")
        if char != "{":
            literal.append("%%" if char == "%" else char)
            i += 1
            continue
        depth, j = 1, i + 1
        while j < len(template) and depth:
            depth += {"{": 1, "}": -1}.get(template[j], 0)
            j += 1
        if depth:
            raise ProbeError(f"log template {template!r}: '{{' at position {i} is never closed")
        expression = template[i + 1:j - 1].strip()
        try:
            compile(expression, "<probe log template>", "eval")
        except (SyntaxError, ValueError) as exc:
            raise ProbeError(f"log template {template!r}: {{{expression}}} is not a Python expression "
                             f"({exc.msg if isinstance(exc, SyntaxError) else exc})") from None
        expressions.append(expression)
        literal.append("%s")
        i = j
    fmt = "".join(literal)
    if not expressions:
        return repr(fmt.replace("%%", "%"))
    return f"{fmt!r} % ({', '.join(f'({e})' for e in expressions)},)"


# -- lines with code -------------------------------------------------------------------------

def lines_with_code(path: str) -> set[int]:
    """Every line of the Python file at ``path`` that some code object runs (OSError, SyntaxError)."""
    with open(path, "rb") as f:
        source = f.read()
    lines: set[int] = set()
    pending = [compile(source, path, "exec", dont_inherit=True)]
    while pending:
        code = pending.pop()
        lines.update(line for _, _, line in code.co_lines() if line is not None)
        pending.extend(const for const in code.co_consts if isinstance(const, type(code)))
    lines.discard(0)   # the module's RESUME
    return lines


class Probe:
    """One probe, already checked. Budgets read it as they read a pydevd LineBreakpoint."""

    __slots__ = ("probe_id", "file", "path", "line", "log", "snapshot", "condition", "expires", "created",
                 "expression", "__weakref__")
    hit_condition = None

    def __init__(self, probe_id: str, file: str, path: str, line: int, *, log: str | None, snapshot: bool,
                 condition: str | None, expires: float, created: float):
        self.probe_id = probe_id
        self.file = file              # as given
        self.path = path              # the real path it resolved to
        self.line = line
        self.log = log
        self.snapshot = snapshot
        self.condition = condition
        self.expires = expires        # seconds from created; 0 = never
        self.created = created        # time.monotonic()
        self.expression = template_expression(log) if log is not None else None

    # What BudgetSupervisor reads of a breakpoint.
    @property
    def breakpoint_id(self) -> str:
        return self.probe_id

    @property
    def is_logpoint(self) -> bool:
        return self.log is not None

    def handle_hit_condition(self, frame) -> bool:
        return False   # probes have no hit conditions

    def expires_at(self) -> float | None:
        return self.created + self.expires if self.expires > 0 else None

    def describe(self) -> dict:
        expires_at = self.expires_at()
        return {"id": self.probe_id, "file": self.file, "path": self.path, "line": self.line,
                "log": self.log, "snapshot": self.snapshot, "condition": self.condition,
                "expires": self.expires,
                "expires_in": None if expires_at is None else max(expires_at - time.monotonic(), 0.0)}


class ProbeBudgets(BudgetSupervisor):
    """budgets.py's supervisor for probes: a probe's breakpoint is in the ProbeEngine, not in
    pydevd, and its notices go to logging (there may be no client to tell)."""

    expiry_rule = "the probe's expiry"
    thread_name = "fastattach-probe-budget"

    def __init__(self, engine: ProbeEngine, tracer, options: dict):
        self._engine = engine
        super().__init__(None, tracer, probe_options(options), self._drop_event)

    def reload(self, options: dict) -> None:
        super().reload(probe_options(options))

    def _make(self, bp, canonical_file: str):
        budget = super()._make(bp, canonical_file)
        budget.spec.created = bp.created   # the probe's expiry counts from when it was set
        budget.spec.expires_at = bp.expires_at()
        return budget

    def _current(self, budget) -> bool:
        spec = budget.spec
        probe = spec.bp_ref()
        return probe is not None and self.lookup(probe) is budget and self._engine.get(probe.probe_id) is probe

    def _drop_event(self, event: str, body: dict) -> None:
        """Where production mode would message a client: a probe has none (its record is logged)."""

    def _notify_output(self, text: str) -> None:
        log.info("%s", text.rstrip())

    def _notify_breakpoint(self, spec, *, verified: bool, message: str) -> None:
        probe_log.log(logging.INFO if verified else logging.WARNING, "probe %s at %s:%d %s",
                      spec.breakpoint_id, spec.file, spec.line, message.removeprefix("fastattach").lstrip(": "),
                      extra={"probe_kind": "notice", "probe_breakpoint_id": spec.breakpoint_id,
                             "probe_file": spec.file, "probe_line": spec.line, "probe_notice": message,
                             "probe_active": verified})

    def _expired(self, budgets: list) -> None:
        for budget in budgets:
            probe = budget.spec.bp_ref()
            if probe is not None:
                self._engine.forget_expired(probe)


def probe_options(options: dict) -> dict:
    """The budgets every probe gets: production mode's (rates, bytes, time, snapshot limits),
    with records always logged and nothing sent to a client."""
    return dict(options, production=True, probe_logging=True, snapshot_output="event")


def claim_tool_id() -> int:
    """A sys.monitoring tool id for probes: one that already carries our name (a previous engine
    that did not finish its teardown), else 4, else 3. RuntimeError names the owners."""
    for tool_id in PREFERRED_TOOL_IDS:
        if _monitoring.get_tool(tool_id) == TOOL_NAME:
            release_tool_id(tool_id, ())
            _monitoring.use_tool_id(tool_id, TOOL_NAME)
            return tool_id
    for tool_id in PREFERRED_TOOL_IDS:
        if _monitoring.get_tool(tool_id) is None:
            _monitoring.use_tool_id(tool_id, TOOL_NAME)
            return tool_id
    owners = ", ".join(f"{tool_id} by {_monitoring.get_tool(tool_id)!r}" for tool_id in PREFERRED_TOOL_IDS)
    raise RuntimeError(f"fastattach probes need a sys.monitoring tool id and both are taken ({owners})")


def release_tool_id(tool_id: int, armed_codes) -> None:
    """Remove every callback and event of the probes' tool, then free it (STYLE.md section 3)."""
    clear = getattr(_monitoring, "clear_tool_id", None)   # missing in 3.12.1 and 3.13.0
    if clear is not None and _monitoring.get_tool(tool_id) is not None:
        clear(tool_id)
        _monitoring.free_tool_id(tool_id)
        return
    clear_tool(tool_id, armed_codes)


class ProbeEngine:
    """Every probe of this process, the tool id they run under and the C tracer behind them.

    ``options()`` returns the session's current options snapshot (_options.py). The engine
    claims its tool id with the first probe and frees it with the last.
    """

    def __init__(self, options):
        self._options = options
        self._lock = threading.RLock()
        self._probes: dict[str, Probe] = {}
        self._by_basename: dict[str, list[Probe]] = {}
        self.tool_id: int | None = None
        self.tracer = None
        self.budgets: ProbeBudgets | None = None
        self._armed: weakref.WeakSet = weakref.WeakSet()   # code objects with our LINE events on
        self.removed_by_expiry: list[str] = []

    # -- the probes ----------------------------------------------------------------------------
    def get(self, probe_id: str) -> Probe | None:
        return self._probes.get(probe_id)

    def list(self) -> list[Probe]:
        with self._lock:
            return list(self._probes.values())

    def set(self, probes: list[Probe]) -> None:
        """Add or replace probes (by id), in one change."""
        with self._lock:
            for probe in probes:
                self._probes[probe.probe_id] = probe
            self._changed()

    def remove(self, probe_ids) -> list[str]:
        """Remove probes by id; the ids that existed."""
        with self._lock:
            removed = [probe_id for probe_id in probe_ids if self._probes.pop(probe_id, None) is not None]
            if removed:
                self._changed()
            return removed

    def forget_expired(self, probe: Probe) -> None:
        """The budget supervisor's thread: ``probe`` expired (its notice is logged already)."""
        with self._lock:
            if self._probes.get(probe.probe_id) is probe:
                del self._probes[probe.probe_id]
                self.removed_by_expiry.append(probe.probe_id)
                self._changed()

    def options_changed(self, options: dict) -> None:
        with self._lock:
            if self.budgets is not None:
                self.budgets.reload(options)

    def close(self) -> None:
        with self._lock:
            self._probes.clear()
            self._changed()

    # -- sys.monitoring ------------------------------------------------------------------------
    def _changed(self) -> None:
        by_basename: dict[str, list[Probe]] = {}
        for probe in self._probes.values():
            by_basename.setdefault(os.path.basename(probe.path), []).append(probe)
        self._by_basename = by_basename
        if not self._probes:
            self._stop()
            return
        if self.tool_id is None:
            self._start()
        self.tracer.breakpoints_changed()
        for code in list(self._armed):
            if self._compute(code) is None:   # its probes are gone: no LINE events there any more
                self._disarm(code)
        self._arm_running_frames()
        _monitoring.restart_events()   # PY_START again for code that answered DISABLE before

    def _start(self) -> None:
        tool_id = claim_tool_id()
        try:
            tracer = _fasttrace.Tracer(_monitoring.DISABLE, self._compute, _never_slow, probes=True)
            if superinstructions.NEEDED:
                _fasttrace.set_superinstruction_table(*superinstructions.superinstruction_table())
            budgets = ProbeBudgets(self, tracer, self._options())
            tracer.set_hooks(budgets.probe, budgets.on_trip)
            _monitoring.register_callback(tool_id, _events.PY_START, tracer.trampoline(_fasttrace.PY_START, self._arm))
            _monitoring.register_callback(tool_id, _events.LINE, tracer.trampoline(_fasttrace.LINE, _unhandled_line))
            _monitoring.set_events(tool_id, _events.PY_START)
        except BaseException:
            release_tool_id(tool_id, ())
            raise
        self.tool_id, self.tracer, self.budgets = tool_id, tracer, budgets

    def _stop(self) -> None:
        """The last probe is gone: the tool's callbacks and events, then the tool id itself."""
        tool_id, tracer, budgets = self.tool_id, self.tracer, self.budgets
        if tool_id is None:
            return
        self.tool_id = self.tracer = self.budgets = None
        armed, self._armed = list(self._armed), weakref.WeakSet()
        tracer.close()
        tracer.set_hooks(None, None)
        budgets.close()
        release_tool_id(tool_id, armed)
        error = tracer.take_error()
        if error is not None:
            log.warning("fastattach: the probe engine swallowed an error: %r", error)
        if superinstructions.NEEDED:
            superinstructions.requicken(tracer.has_table)

    def _compute(self, code):
        """None, or (False, ((line, condition for C, Budget), ...)) for the probes in code.

        Called by C inside a PY_START callback, once per code object and probe change. Code
        whose file name has no probe's base name is answered without a syscall or a cache.
        """
        candidates = self._by_basename.get(os.path.basename(code.co_filename))
        budgets = self.budgets
        if not candidates or budgets is None:
            return None
        path = os.path.realpath(code.co_filename)
        matching = [probe for probe in candidates if probe.path == path]
        if not matching:
            return None
        code_lines = {line for _, _, line in code.co_lines() if line is not None}
        entries = tuple((probe.line, *budgets.entry(probe, probe.file, None))
                        for probe in matching if probe.line in code_lines)
        return (False, entries) if entries else None

    def _arm(self, code, offset):
        """PY_START of code that holds a probe line: LINE events for it, then PY_START answers DISABLE."""
        tool_id, tracer = self.tool_id, self.tracer
        if tool_id is not None and tracer is not None:
            try:
                _monitoring.set_local_events(tool_id, code, _events.LINE)
                tracer.note_local_events(code, True)
                self._armed.add(code)
            except Exception:   # never into the user's frame
                log.exception("fastattach: could not arm a probe in %s", code.co_qualname)
        return _monitoring.DISABLE

    def _disarm(self, code) -> None:
        _monitoring.set_local_events(self.tool_id, code, 0)
        self.tracer.note_local_events(code, False)
        self._armed.discard(code)

    def _arm_running_frames(self) -> None:
        """Frames already running (a service's main loop) see no PY_START: arm their code now."""
        for frame in list(sys._current_frames().values()):
            while frame is not None:
                code = frame.f_code
                if code not in self._armed and self._compute(code) is not None:
                    self._arm(code, 0)
                frame = frame.f_back
        del frame


def _never_slow() -> bool:
    """Nobody steps or suspends on the probes' tool: C never has to forward everything."""
    return False


def _unhandled_line(code, line):
    """What C forwards on a LINE event it could not decide (an error it recorded): skip it."""
    return None

"""Per-breakpoint budgets: what each breakpoint may cost, and what happens when it costs more.

The counting happens in C, on the hit path (``_fasttrace.Budget``: token buckets for
condition evaluations, probe outputs, output bytes, and the time hits take measured
against the wall clock).  This module decides which breakpoint gets which budget, serves
the hits C hands to Python (``probe``: logpoint messages, production snapshots), and does
the talking: when a budget trips, the client gets an ``output`` event and a ``breakpoint``
event (changed, unverified, with the reason); after the cool-down the breakpoint resumes
and the client gets a summary of what was dropped.

Threads: ``probe`` and ``on_trip`` run on the user's threads inside sys.monitoring
callbacks and must never raise (C records what they raise, see Tracer.take_error);
everything slow (DAP messages, re-arming lines, expiry) runs on one supervisor thread.
Messages for the client go out through the ``notify(event, body)`` callable the owner of
the session hands in; this module never imports the network.
"""

from __future__ import annotations

import _thread
import collections
import logging
import os
import sys
import threading
import time
import weakref

from .. import _fasttrace
from . import production, redact, seam

log = logging.getLogger("fastattach")
probe_log = production.probe_log


def _where(spec: ProbeSpec) -> str:
    return f"{spec.file}:{spec.line}"


class ProbeSpec:
    """What C hands the probe for one breakpoint, and what the notices say about it."""

    __slots__ = ("bp_ref", "breakpoint_id", "file", "line", "kind", "message_template", "condition_code",
                 "python_condition", "c_condition", "hit_condition", "max_message_bytes", "created", "expires_at",
                 "expired", "episode_hits", "episode_start", "condition_error_reported", "probe_error_reported",
                 "__weakref__")

    def __init__(self, bp, canonical_file: str, kind: str):
        self.bp_ref = weakref.ref(bp)
        self.breakpoint_id = bp.breakpoint_id
        self.file = canonical_file
        self.line = bp.line
        self.kind = kind                  # "logpoint", "snapshot" or "condition"
        self.message_template = None      # redact.Template of the logpoint message
        self.condition_code = None        # compiled condition the probe evaluates (C did not)
        self.python_condition = False     # the probe must evaluate condition / hit condition
        self.c_condition = None           # compiled condition C evaluates before anything else
        self.hit_condition = bool(bp.hit_condition)
        self.max_message_bytes = 0
        self.created = time.monotonic()
        self.expires_at = None
        self.expired = False
        self.episode_hits = 0             # Budget hits when the current running episode began
        self.episode_start = time.monotonic_ns()
        self.condition_error_reported = False
        self.probe_error_reported = False

    @property
    def what(self) -> str:
        return {"logpoint": "logpoint", "snapshot": "snapshot breakpoint"}.get(self.kind, "conditional breakpoint")


def cpu_fraction(options: dict, *, always_on: bool) -> float:
    """The share of one core a breakpoint's hits may take (the time budget, which governs
    conditions): always-on breakpoints (probes, production mode) keep probe_cpu_fraction,
    1% by default; a debugging session's breakpoints get condition_cpu_fraction, 10%."""
    return options["probe_cpu_fraction"] if always_on else options["condition_cpu_fraction"]


def condition_rate(options: dict, *, pydevd_evaluates: bool) -> float:
    """The count cap on a breakpoint's condition evaluations, 0 = none.  Off by default where
    fastattach evaluates the condition (in C, or in the probe): every evaluation is timed, so
    the time budget suffices.  pydevd_condition_evaluations_per_second (5000) stays on where
    pydevd evaluates it, because the time of pydevd's dispatch around the condition is not."""
    if pydevd_evaluates:
        return options["pydevd_condition_evaluations_per_second"]
    return options["condition_evaluations_per_second"]


def _compile(source: str | None, what: str):
    if not source:
        return None
    from . import conditions  # RSS: probes and sessions without conditions never load it

    try:
        return conditions.compile_condition(source, f"<breakpoint {what}>")
    except (SyntaxError, ValueError):
        return None


# _thread's own, taken when fastattach imports this module: see BudgetSupervisor._wake.
_allocate_real_lock = _thread.allocate_lock


class BudgetSupervisor:
    """The budgets of one pydevd instance (one Gate's tracer), and the thread that watches them.

    engine/probes.py's ProbeBudgets is the same for the always-on probes (no pydevd: ``py_db``
    is None); it overrides only where a budget's breakpoint lives and where notices go.
    """

    expiry_rule = "production mode"   # what the expiry notice names as the reason
    thread_name = "fastattach-budget"

    def __init__(self, py_db, tracer, options: dict, notify):
        self.py_db = py_db
        self.tracer = tracer
        self.options = options
        self._notify = notify
        self._generation = 0              # bumped by reload(): budgets made earlier are replaced
        self._by_bp: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # LineBreakpoint -> (gen, Budget)
        self._lock = threading.RLock()   # on_trip may run on a thread that holds it (a hit inside entry())
        # Held while nothing is pending: on_trip and close release it, the supervisor waits to
        # take it. A bare _thread lock, not a Condition: once gevent has patched threading,
        # every Condition.wait makes its waiter a gevent lock, and a thread of ours that
        # waits on one runs a gevent hub of its own, whose greenlets the interpreter's last
        # garbage collection frees from the main thread ("corrupted double-linked list",
        # SIGABRT at the program's exit, about one run in five). This module is imported at
        # the first attach, before any patch (a later attach is refused), so it is the real one.
        self._wake = _allocate_real_lock()
        self._wake.acquire()
        self._trips: collections.deque = collections.deque()
        self._paused: dict = {}           # Budget -> resume time (time.monotonic()), or None if expired
        self._closed = False
        self._next_prune = 0.0
        self._in_probe = threading.local()
        self.probe_errors: list[str] = []   # the first few, as text
        self.probe_error_count = 0
        self._thread = threading.Thread(target=self._supervise, name=self.thread_name, daemon=True)
        self._thread.pydev_do_not_trace = True
        self._thread.is_pydev_daemon_thread = True
        self._thread.start()

    # -- configuration ---------------------------------------------------------------
    @property
    def production(self) -> bool:
        return bool(self.options["production"])

    def reload(self, options: dict) -> None:
        """Options changed: every breakpoint gets a fresh budget with the new limits."""
        with self._lock:
            self.options = options
            self._generation += 1
            self._paused.clear()
        self.tracer.breakpoints_changed()
        sys.monitoring.restart_events()   # re-arm lines that paused budgets had disabled

    # -- called by gate.Gate._compute (inside a monitoring callback) -------------------
    def entry(self, bp, canonical_file: str, c_condition):
        """(condition for C, Budget or None) for a pydevd LineBreakpoint."""
        with self._lock:
            cached = self._by_bp.get(bp)
            if cached is not None and cached[0] == self._generation:
                return cached[1].spec.c_condition, cached[1]
            budget = self._make(bp, canonical_file)
            if budget is not None:
                self._by_bp[bp] = (self._generation, budget)
        if budget is None:
            return c_condition, None
        return budget.spec.c_condition, budget

    def _make(self, bp, canonical_file: str):
        o = self.options
        has_condition = bool(bp.condition) or bool(bp.hit_condition)
        if bp.is_logpoint:
            kind = "logpoint"
        elif self.production:
            kind = "snapshot"
        elif has_condition:
            kind = "condition"
        else:
            return None   # an ordinary breakpoint: it suspends, a person continues it
        spec = ProbeSpec(bp, canonical_file, kind)
        # C evaluates a plain condition itself; with a hit condition, pydevd's rule is
        # "stop if either holds", so both go to Python together.
        spec.python_condition = bool(bp.hit_condition)
        if spec.python_condition:
            spec.condition_code = _compile(bp.condition, "condition")
        elif bp.condition:
            # None when it does not compile: the probe (or pydevd) then reports the error.
            spec.c_condition = _compile(bp.condition, "condition")
            if spec.c_condition is None and kind != "condition":
                spec.python_condition = True
        probe = kind != "condition"
        output_rate = byte_rate = 0.0
        if kind == "logpoint":
            spec.message_template = redact.Template.from_pydevd_expression(bp.expression, redact.rules_for(o))
            output_rate = o["logpoint_messages_per_second"]
            byte_rate = o["logpoint_bytes_per_second"]
            spec.max_message_bytes = int(byte_rate) if byte_rate else 1 << 20
        elif kind == "snapshot":
            output_rate = o["snapshots_per_second"]
        if self.production and o["production_expiry"] > 0:
            spec.expires_at = spec.created + o["production_expiry"]
        return _fasttrace.Budget(
            spec,
            eval_rate=condition_rate(o, pydevd_evaluates=not probe and spec.c_condition is None),
            output_rate=output_rate,
            byte_rate=byte_rate,
            time_fraction=cpu_fraction(o, always_on=self.production),
            counts_evaluations=has_condition,
            probe=probe,
        )

    def lookup(self, bp):
        cached = self._by_bp.get(bp)
        return cached[1] if cached is not None and cached[0] == self._generation else None

    def budgets(self) -> list:
        with self._lock:
            return [budget for _, budget in list(self._by_bp.values())]

    # -- called on user threads from C -------------------------------------------------
    def probe(self, spec: ProbeSpec):
        """Serve one hit of a probe breakpoint: the bytes output, or -1 for none."""
        state = self._in_probe
        if getattr(state, "active", False):
            return -1   # a breakpoint inside our own output path (a logging handler, a repr)
        thread = threading.current_thread()
        if getattr(thread, "is_pydev_daemon_thread", False) or getattr(thread, "pydev_do_not_trace", False):
            return -1
        bp = spec.bp_ref()
        if bp is None:
            return -1
        frame = sys._getframe(1)
        state.active = True
        try:
            if spec.python_condition and not self._python_condition(spec, bp, frame):
                return -1
            if spec.kind == "logpoint":
                return self._log_message(spec, frame)
            return production.snapshot_hit(spec, frame, self.options, self._notify)
        except Exception as exc:   # never into the user's frame
            self.probe_error_count += 1
            text = f"{type(exc).__name__}: {exc}"
            if len(self.probe_errors) < 10:
                self.probe_errors.append(text)   # text only: a traceback would keep user frames alive
            if not spec.probe_error_reported:
                spec.probe_error_reported = True
                self._notify_output(f"fastattach: the {spec.what} at {_where(spec)} failed: {text}\n")
            return -1
        finally:
            state.active = False
            del frame

    def _python_condition(self, spec: ProbeSpec, bp, frame) -> bool:
        """pydevd's rule (handle_breakpoint_condition): stop if the hit condition or the condition holds."""
        if bp.handle_hit_condition(frame):   # pydevd's own hit counter, so counts stay consistent
            return True
        if spec.condition_code is None:
            if bp.condition and not spec.condition_error_reported:
                spec.condition_error_reported = True
                self._notify_output(f"fastattach: the condition of the {spec.what} at {_where(spec)} does not "
                                    f"compile: {bp.condition!r}\n")
            return False
        try:
            return bool(eval(spec.condition_code, frame.f_globals, frame.f_locals))
        except Exception as exc:
            if not spec.condition_error_reported:
                spec.condition_error_reported = True
                self._notify_output(f"fastattach: the condition of the {spec.what} at {_where(spec)} raised "
                                    f"{type(exc).__name__}: {exc}\n")
            return False

    def _log_message(self, spec: ProbeSpec, frame) -> int:
        """What pydevd's handle_breakpoint_expression + make_io_message do, from precompiled code,
        with the values redact.py hides shown as <redacted>."""
        if spec.message_template is None:
            text, redacted = "<invalid log message expression>", 0
        else:
            text, redacted = spec.message_template.render(frame)
        data = text.encode("utf-8", "replace")
        if len(data) > spec.max_message_bytes:
            text = data[: max(spec.max_message_bytes - 3, 0)].decode("utf-8", "ignore") + "..."
            data = text.encode("utf-8", "replace")
        seam.send_output(self.py_db, text + os.linesep)
        production.emit_probe_record(self.options, text, {
            "probe_kind": "logpoint", "probe_breakpoint_id": spec.breakpoint_id, "probe_file": spec.file,
            "probe_line": spec.line, "probe_thread": threading.current_thread().name, "probe_message": text,
            "probe_redacted": redacted,
        })
        return len(data) + len(os.linesep)

    def on_trip(self, budget) -> None:
        """A budget paused itself (C, on the hit path, or charge()): hand it to the supervisor."""
        with self._lock:
            self._trips.append(budget)
            self._wake_supervisor()

    def charge(self, budget, elapsed_ns: int) -> None:
        if budget.charge(elapsed_ns):
            self.on_trip(budget)

    # -- the supervisor thread ----------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake_supervisor()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    def _wake_supervisor(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:
            pass   # released already: the supervisor has a wake-up pending

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                timeout = self._next_deadline() - time.monotonic()
                pending = bool(self._trips)
            if not pending and timeout > 0:
                self._wake.acquire(timeout=min(timeout, 1.0))
            with self._lock:
                if self._closed:
                    return
                trips, self._trips = list(self._trips), collections.deque()
            try:
                for budget in trips:
                    self._tripped(budget)
                self._resume_due()
                self._expire_due()
                if time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + 5.0
                    self._prune()
            except Exception:
                log.exception("fastattach: the budget supervisor failed")

    def _next_deadline(self) -> float:
        deadline = time.monotonic() + 1.0
        for resume_at in self._paused.values():
            if resume_at is not None:
                deadline = min(deadline, resume_at)
        return deadline

    def _current(self, budget) -> bool:
        """budget belongs to a breakpoint pydevd still has, and is this generation's budget for it."""
        spec = budget.spec
        bp = spec.bp_ref()
        if bp is None or self.lookup(bp) is not budget:
            return False
        try:
            return self.py_db.breakpoints.get(spec.file, {}).get(spec.line) is bp
        except Exception:   # pydevd's dicts changing under us: ask again next time
            return False

    def _prune(self) -> None:
        """Forget budgets of breakpoints pydevd dropped, even if something still holds them."""
        with self._lock:
            entries = list(self._by_bp.items())
        for bp, (generation, budget) in entries:
            if generation != self._generation or not self._current(budget):
                with self._lock:
                    self._by_bp.pop(bp, None)
                    self._paused.pop(budget, None)

    def _tripped(self, budget) -> None:
        spec = budget.spec
        if not budget.paused or spec.expired or not self._current(budget):
            return
        cooldown = self.options["budget_cooldown"]
        with self._lock:
            self._paused[budget] = time.monotonic() + cooldown if cooldown > 0 else None
        limits = budget.limits
        reason = budget.reason
        limit_text = {
            "evaluations": f"more than {limits['eval_rate']:g} condition evaluations/s",
            "outputs": (f"more than {limits['output_rate']:g} messages/s" if spec.kind == "logpoint"
                        else f"more than {limits['output_rate']:g} snapshots/s"),
            "bytes": f"more than {limits['byte_rate']:g} bytes/s of messages",
            "time": f"its hits took more than {limits['time_fraction'] * 100:g}% of one core",
        }.get(reason, reason)
        stats = budget.stats()
        resumes = f"it resumes in {cooldown:g} s" if cooldown > 0 else "it stays paused"
        message = (f"paused: {limit_text}; {resumes}, or when you change it "
                   f"(hits so far {stats['hits']}, output {stats['outputs']}, dropped {stats['dropped']})")
        self._notify_output(f"fastattach: {spec.what} at {_where(spec)} (id {spec.breakpoint_id}) {message}. "
                            f"While paused its line costs nothing.\n")
        self._notify_breakpoint(spec, verified=False, message=f"fastattach {message}")
        log.warning("fastattach: %s at %s paused: %s", spec.what, _where(spec), limit_text)

    def _resume_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [b for b, at in self._paused.items() if at is not None and at <= now]
            for budget in due:
                del self._paused[budget]
        resumed = []
        for budget in due:
            spec = budget.spec
            if spec.expired or not self._current(budget):
                continue
            before = budget.stats()
            paused_at, episode_start = budget.paused_at, budget.first_hit_at or spec.episode_start
            if not budget.resume():
                continue
            resumed.append((budget, before, paused_at, episode_start))
        if not resumed:
            return
        sys.monitoring.restart_events()   # re-arm the lines the paused budgets DISABLEd
        now_ns = time.monotonic_ns()
        for budget, before, paused_at, episode_start in resumed:
            spec = budget.spec
            ran_s = max(paused_at - episode_start, 1) / 1e9
            rate = (before["hits"] - spec.episode_hits) / ran_s
            paused_s = (now_ns - paused_at) / 1e9
            spec.episode_hits, spec.episode_start = before["hits"], now_ns
            summary = (f"fastattach: {spec.what} at {_where(spec)} (id {spec.breakpoint_id}) resumed after "
                       f"{paused_s:.1f} s paused. Dropped: {before['dropped']} hits refused by its budget "
                       f"({before['paused_hits']} of them while paused); the paused line was disabled, so its "
                       f"other hits were not counted: at the {rate:.0f} hits/s it ran before the pause that is up "
                       f"to {rate * paused_s:.0f}. Totals: {before['hits']} hits, {before['outputs']} output.\n")
            self._notify_output(summary)
            self._notify_breakpoint(spec, verified=True, message="fastattach: resumed")

    def _expire_due(self) -> None:
        now = time.monotonic()
        expired = []
        with self._lock:
            candidates = [budget for generation, budget in list(self._by_bp.values())
                          if generation == self._generation]
        for budget in candidates:
            spec = budget.spec
            if spec.expires_at is None or spec.expired or spec.expires_at > now or not self._current(budget):
                continue
            with self._lock:
                spec.expired = True
                budget.pause()
                self._paused[budget] = None
            expired.append(budget)
        for budget in expired:
            spec = budget.spec
            stats = budget.stats()
            seconds = spec.expires_at - spec.created
            message = (f"expired after {seconds:g} s ({self.expiry_rule}); set it again to re-enable "
                       f"(hits {stats['hits']}, output {stats['outputs']}, dropped {stats['dropped']})")
            self._notify_output(f"fastattach: {spec.what} at {_where(spec)} (id {spec.breakpoint_id}) {message}\n")
            self._notify_breakpoint(spec, verified=False, message=f"fastattach: {message}")
        if expired:
            sys.monitoring.restart_events()   # each expired line then answers DISABLE once more
            self._expired(expired)

    def _expired(self, budgets: list) -> None:
        """Budgets that just expired (paused for good); the probes' subclass forgets their probes."""

    # -- DAP -------------------------------------------------------------------------
    def _notify_output(self, text: str) -> None:
        self._notify("output", {"category": "console", "output": text})

    def _notify_breakpoint(self, spec: ProbeSpec, *, verified: bool, message: str) -> None:
        self._notify("breakpoint", {"reason": "changed", "breakpoint": {
            "id": spec.breakpoint_id, "verified": verified, "line": spec.line, "message": message}})

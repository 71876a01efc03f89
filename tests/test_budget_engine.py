"""The C side of budgets on its own: trampolines for tool 4 in front of a recording
callback and a recording probe, no pydevd.  Counts only, never timing."""

from __future__ import annotations

import contextlib
import gc
import sys
import textwrap
import time
import weakref

import pytest

from fastattach import _fasttrace

M = sys.monitoring
E = M.events
TOOL = 4

LOOP = """
def loop(n):
    total = 0
    for i in range(n):
        total += i
    return total
"""
HOT_LINE = 5   # total += i (line 1 is the blank line after the quotes)
ONE_LINE = """
def one_line(n):
    total = 0
    for i in range(n): total += i
    return total
"""
ONE_LINE_LINE = 4


def make_function(source: str, name: str):
    namespace: dict = {}
    exec(compile(textwrap.dedent(source), f"<budget test {name}>", "exec"), namespace)
    return namespace[name]


class Target:
    """Stands in for pydevd's callback."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1


class Table:
    """compute(code): {co_name: {line: (condition, budget)}}."""

    def __init__(self):
        self.lines: dict[str, dict[int, tuple]] = {}

    def compute(self, code):
        entries = tuple((line, *entry) for line, entry in self.lines.get(code.co_name, {}).items())
        return (False, entries) if entries else None


class Probe:
    def __init__(self, answer=10, raises=None, action=None):
        self.specs = []
        self.frames = []
        self.answer = answer
        self.raises = raises
        self.action = action

    def __call__(self, spec):
        self.specs.append(spec)
        self.frames.append(sys._getframe(1).f_code.co_name)
        if self.action is not None:
            self.action()
        if self.raises is not None:
            raise self.raises
        return self.answer


@contextlib.contextmanager
def engine(table: Table, code, probe=None, on_trip=None, events=(E.LINE,)):
    tracer = _fasttrace.Tracer(M.DISABLE, table.compute, lambda: False)
    tracer.set_hooks(probe, on_trip)
    kinds = {E.LINE: _fasttrace.LINE, E.JUMP: _fasttrace.JUMP}
    target = Target()
    M.use_tool_id(TOOL, "fastattach-budget-test")
    try:
        mask = 0
        for event in events:
            M.register_callback(TOOL, event, tracer.trampoline(kinds[event], target))
            mask |= event
        M.set_local_events(TOOL, code, mask)
        yield tracer, target
    finally:
        for event in events:
            M.register_callback(TOOL, event, None)
        M.set_local_events(TOOL, code, 0)
        M.free_tool_id(TOOL)
        M.restart_events()


def test_outputs_are_limited_then_the_line_is_disabled():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", output_rate=50, probe=True)
    trips = []
    table = Table()
    table.lines["loop"] = {HOT_LINE: (None, budget)}
    probe = Probe(answer=7)
    with engine(table, loop.__code__, probe, trips.append) as (tracer, target):
        assert loop(100_000) == sum(range(100_000))
        stats = tracer.stats()
    assert len(probe.specs) == 50 and set(probe.specs) == {"spec"}
    assert probe.frames[0] == "loop", "the probe sees the user's frame as its caller"
    assert target.calls == 0, "a probe breakpoint never reaches pydevd"
    assert trips == [budget] and budget.paused and budget.reason == "outputs"
    b = budget.stats()
    assert b["outputs"] == 50 and b["bytes"] == 350 and b["dropped"] == 1 and b["hits"] == 51
    # After the trip the line answered DISABLE once and was never called again.
    assert stats["probe"] == 50 and stats["trips"] == 1 and stats["budget_dropped"] == 1
    assert stats["budget_paused"] == 0


def test_resume_and_restart_events_rearm_the_line():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", output_rate=5, probe=True)
    table = Table()
    table.lines["loop"] = {HOT_LINE: (None, budget)}
    probe = Probe()
    with engine(table, loop.__code__, probe) as (tracer, target):
        loop(1000)
        assert len(probe.specs) == 5 and budget.paused
        M.restart_events()                  # e.g. pydevd re-arming: one paused event, DISABLE again
        loop(1000)
        assert budget.stats()["paused_hits"] == 1 and len(probe.specs) == 5
        assert budget.resume() is True and not budget.paused and budget.reason is None
        M.restart_events()
        loop(1000)
        assert len(probe.specs) == 10 and budget.paused


def test_byte_budget_trips_after_the_message_that_overdraws_it():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", output_rate=1000, byte_rate=100, probe=True)
    table = Table()
    table.lines["loop"] = {HOT_LINE: (None, budget)}
    probe = Probe(answer=30)
    with engine(table, loop.__code__, probe):
        loop(1000)
    assert len(probe.specs) == 4 and budget.reason == "bytes"   # 4 * 30 > 100


def test_condition_false_stays_armed_and_counts_evaluations():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", eval_rate=100, counts_evaluations=True)
    table = Table()
    table.lines["loop"] = {HOT_LINE: (compile("i < 0", "<c>", "eval"), budget)}
    with engine(table, loop.__code__) as (tracer, target):
        loop(10_000)
        stats = tracer.stats()
    assert stats["condition_false"] == 100 and budget.reason == "evaluations"
    assert budget.stats()["evaluations"] == 100 and target.calls == 0


def test_slow_condition_trips_the_time_budget():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", time_fraction=0.01, counts_evaluations=True)   # 10 ms bucket
    table = Table()
    table.lines["loop"] = {HOT_LINE: (compile("__import__('time').sleep(0.001)", "<c>", "eval"), budget)}
    with engine(table, loop.__code__):
        start = time.monotonic()
        loop(2_000)
        seconds = time.monotonic() - start
    assert budget.reason == "time"
    # Each evaluation costs at least 1 ms; the bucket holds 10 ms and refills 10 ms/s.
    assert 1 <= budget.stats()["evaluations"] <= 10 + 10 * seconds + 1
    assert budget.stats()["time_ns"] >= 10_000_000


def test_true_condition_forwards_to_pydevd_when_not_a_probe():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", eval_rate=1000, counts_evaluations=True)
    table = Table()
    table.lines["loop"] = {HOT_LINE: (compile("i % 10 == 0", "<c>", "eval"), budget)}
    with engine(table, loop.__code__) as (tracer, target):
        loop(100)
    assert target.calls == 10 and tracer.stats()["condition_forward"] == 10 and not budget.paused


def test_charge_from_python_pauses():
    budget = _fasttrace.Budget("spec", time_fraction=0.01)
    assert budget.charge(5_000_000) is False
    assert budget.charge(6_000_000) is True and budget.reason == "time"
    assert budget.charge(6_000_000) is False, "only the charge that paused it reports"
    assert budget.pause() is False and budget.resume() is True and budget.pause() is True
    assert budget.reason == "external"


def test_probe_errors_are_recorded_never_raised():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", probe=True)
    table = Table()
    table.lines["loop"] = {HOT_LINE: (None, budget)}
    with engine(table, loop.__code__, Probe(raises=ValueError("probe broke"))) as (tracer, _):
        assert loop(10) == 45
        error = tracer.take_error()
    assert isinstance(error, ValueError) and budget.stats()["probe_errors"] == 10


def test_on_trip_errors_are_recorded_never_raised():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", output_rate=1, probe=True)
    table = Table()
    table.lines["loop"] = {HOT_LINE: (None, budget)}

    def on_trip(b):
        raise RuntimeError("on_trip broke")

    with engine(table, loop.__code__, Probe(), on_trip) as (tracer, _):
        assert loop(10) == 45
        assert isinstance(tracer.take_error(), RuntimeError)


def test_table_reloaded_while_the_probe_runs():
    """The probe changes breakpoints and re-enters the code: the outer hit holds its own references."""
    loop = make_function(LOOP, "loop")
    table = Table()
    tracer_box = []

    def action():
        table.lines["loop"] = {HOT_LINE: (None, _fasttrace.Budget("new", probe=True, output_rate=3))}
        tracer_box[0].breakpoints_changed()
        if len(probe.specs) < 3:
            loop(2)   # reloads the table the outer hit was found in
        gc.collect()

    class Spec:
        def __eq__(self, other):
            return other == "old"

        __hash__ = object.__hash__

    probe = Probe(action=action)
    old_spec = Spec()
    ref = weakref.ref(old_spec)
    table.lines["loop"] = {HOT_LINE: (None, _fasttrace.Budget(old_spec, probe=True))}
    del old_spec
    with engine(table, loop.__code__, probe) as (tracer, _):
        tracer_box.append(tracer)
        loop(3)
        assert tracer.take_error() is None
    assert probe.specs[0] == "old" and "new" in probe.specs
    probe.specs.clear()
    table.lines.clear()
    gc.collect()
    assert ref() is None, "the replaced budget (and its spec) was released"


def test_one_line_loop_hits_through_jump_on_312():
    one_line = make_function(ONE_LINE, "one_line")
    budget = _fasttrace.Budget("spec", output_rate=1000, probe=True)
    table = Table()
    table.lines["one_line"] = {ONE_LINE_LINE: (None, budget)}
    probe = Probe()
    with engine(table, one_line.__code__, probe, events=(E.LINE, E.JUMP)):
        assert one_line(50) == sum(range(50))
    # LINE fires once on entry; each backward jump within the line is one more hit.
    assert 50 <= len(probe.specs) <= 51


def test_bad_entries_are_rejected_and_recorded():
    loop = make_function(LOOP, "loop")
    table = Table()
    table.lines["loop"] = {HOT_LINE: (None, "not a budget")}
    with engine(table, loop.__code__) as (tracer, target):
        assert loop(3) == 3
        assert isinstance(tracer.take_error(), TypeError)
    assert target.calls >= 3, "an unusable table forwards every event to pydevd"
    with pytest.raises(ValueError):
        _fasttrace.Budget("spec", output_rate=-1)
    with pytest.raises(TypeError):
        _fasttrace.Tracer(M.DISABLE, table.compute, lambda: False).set_hooks(1, None)


def test_budget_is_collected_with_a_cycle_through_its_spec():
    class Spec:
        pass

    spec = Spec()
    spec.budget = _fasttrace.Budget(spec)
    ref = weakref.ref(spec)
    del spec
    gc.collect()
    assert ref() is None


def test_first_hit_and_pause_times_are_monotonic_ns():
    loop = make_function(LOOP, "loop")
    budget = _fasttrace.Budget("spec", output_rate=1, probe=True)
    table = Table()
    table.lines["loop"] = {HOT_LINE: (None, budget)}
    before = time.monotonic_ns()
    with engine(table, loop.__code__, Probe()):
        loop(5)
    after = time.monotonic_ns()
    assert before <= budget.first_hit_at <= budget.paused_at <= after


# -- the budget policy (docs/production.md, "The budget policy") ---------------------------

class FakeBreakpoint:
    """The attributes of pydevd's LineBreakpoint that budgets.py reads."""

    def __init__(self, *, condition=None, hit_condition=None, expression=None, is_logpoint=False):
        self.breakpoint_id, self.line = 1, HOT_LINE
        self.condition, self.hit_condition = condition, hit_condition
        self.expression, self.is_logpoint = expression, is_logpoint


@pytest.fixture
def supervisor():
    from fastattach import _options
    from fastattach.engine import budgets

    made = []

    def make(**changes):
        made.append(budgets.BudgetSupervisor(None, None, _options.replace(_options.DEFAULTS, changes),
                                             lambda event, body: None))
        return made[-1]

    yield make
    for s in made:
        s.close()


def limits_of(supervisor, bp):
    return supervisor._make(bp, "/app/file.py").limits


def test_default_policy_time_governs_conditions(supervisor):
    debugging, production = supervisor(), supervisor(production=True)
    cheap = FakeBreakpoint(condition="i == 299_999")
    # A debugging session: 10% of a core, no count cap on a condition C evaluates.
    assert limits_of(debugging, cheap) == {"eval_rate": 0.0, "output_rate": 0.0, "byte_rate": 0.0,
                                           "time_fraction": 0.10, "counts_evaluations": True, "probe": False}
    logpoint = FakeBreakpoint(condition="i < 0", expression="i={i}", is_logpoint=True)
    assert limits_of(debugging, logpoint)["eval_rate"] == 0.0
    assert limits_of(debugging, logpoint)["time_fraction"] == 0.10
    # What pydevd evaluates (a hit condition; a condition that does not compile, which pydevd
    # reports) keeps its count cap: the time of pydevd's dispatch around it is not measured.
    assert limits_of(debugging, FakeBreakpoint(hit_condition="%250"))["eval_rate"] == 5000.0
    assert limits_of(debugging, FakeBreakpoint(condition="i <"))["eval_rate"] == 5000.0
    # Production mode (and probes) keep 1% of a core, and no count cap on conditions.
    for bp in (cheap, logpoint, FakeBreakpoint(hit_condition="%250"), FakeBreakpoint()):
        limits = limits_of(production, bp)
        assert limits["time_fraction"] == 0.01 and limits["eval_rate"] == 0.0 and limits["probe"], limits


def test_policy_options_change_only_their_own_limit(supervisor):
    s = supervisor(condition_cpu_fraction=0.2, probe_cpu_fraction=0.05, condition_evaluations_per_second=100,
                   pydevd_condition_evaluations_per_second=7)
    assert limits_of(s, FakeBreakpoint(condition="i < 0"))["time_fraction"] == 0.2
    assert limits_of(s, FakeBreakpoint(condition="i < 0"))["eval_rate"] == 100.0
    assert limits_of(s, FakeBreakpoint(hit_condition="5"))["eval_rate"] == 7.0
    p = supervisor(production=True, probe_cpu_fraction=0.05, condition_evaluations_per_second=100)
    assert limits_of(p, FakeBreakpoint(condition="i < 0"))["time_fraction"] == 0.05
    assert limits_of(p, FakeBreakpoint(hit_condition="5"))["eval_rate"] == 100.0   # the probe evaluates it


def test_cheap_condition_on_a_hot_line_keeps_its_rare_true_case():
    """The default count policy (no cap) against the old one (5,000 evaluations/s): 200,000
    evaluations in well under a second.  Time is left out here (it is wall time; it has tests
    of its own above and in test_budget_e2e.py)."""
    from fastattach import _options
    from fastattach.engine import budgets

    loop = make_function(LOOP, "loop")
    condition = compile("i == 199_999", "<c>", "eval")
    rate = budgets.condition_rate(_options.DEFAULTS, pydevd_evaluates=False)
    outcomes = {}
    for name, eval_rate in (("default", rate), ("old count cap", 5000.0)):
        budget = _fasttrace.Budget("spec", eval_rate=eval_rate, counts_evaluations=True)
        table = Table()
        table.lines["loop"] = {HOT_LINE: (condition, budget)}
        with engine(table, loop.__code__) as (tracer, target):
            loop(200_000)
        outcomes[name] = (target.calls, budget.paused, budget.stats()["evaluations"])
    assert outcomes["default"] == (1, False, 200_000), "armed throughout; the true case reached pydevd"
    calls, paused, evaluations = outcomes["old count cap"]
    assert calls == 0 and paused and evaluations < 200_000, outcomes   # what the policy fixes

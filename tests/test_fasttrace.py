"""The C engine on its own: trampolines in front of a recording callback, no pydevd.

The trampolines are registered for tool 4 here so pydevd's tool 0 stays free; a
trampoline does not care which tool it serves.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import textwrap
import weakref

import pytest

from fastattach import _fasttrace

M = sys.monitoring
E = M.events
TOOL = 4


class RecordingTarget:
    """Stands in for pydevd's callback: records calls and answers like pydevd would."""

    def __init__(self, answer=None, raises=None):
        self.calls = []
        self.answer = answer
        self.raises = raises

    def __call__(self, *args):
        self.calls.append(args)
        if self.raises is not None:
            raise self.raises
        return self.answer


class Breakpoints:
    """The decision side (what engine.gate.Gate computes from pydevd's breakpoints)."""

    def __init__(self):
        self.lines: dict[str, dict[int, object]] = {}   # co_name -> {line: compiled condition | None}
        self.function_names: set[str] = set()
        self.stepping = False
        self.fail_with: Exception | None = None

    def compute(self, code):
        if self.fail_with is not None:
            raise self.fail_with
        entries = tuple(self.lines.get(code.co_name, {}).items())
        function_bp = code.co_name in self.function_names
        return (function_bp, entries) if entries or function_bp else None

    def need_slow(self):
        return self.stepping


def condition(source: str):
    return compile(source, "<breakpoint condition>", "eval")


@contextlib.contextmanager
def trampolines(breakpoints: Breakpoints, events: dict[int, RecordingTarget], local_to=()):
    """Register a trampoline for each event in front of its recording target, then tear down fully.

    With ``local_to`` the events are enabled only on those code objects, so the test's
    own lines do not count.
    """
    tracer = _fasttrace.Tracer(M.DISABLE, breakpoints.compute, breakpoints.need_slow)
    kinds = {E.PY_START: _fasttrace.PY_START, E.LINE: _fasttrace.LINE, E.JUMP: _fasttrace.JUMP}
    M.use_tool_id(TOOL, "fastattach-test")
    try:
        mask = 0
        for event, target in events.items():
            M.register_callback(TOOL, event, tracer.trampoline(kinds[event], target))
            mask |= event
        if local_to:
            for code in local_to:
                M.set_local_events(TOOL, code, mask)
        else:
            M.set_events(TOOL, mask)
        yield tracer
    finally:
        for event in events:
            M.register_callback(TOOL, event, None)
        M.set_events(TOOL, 0)
        for code in local_to:
            M.set_local_events(TOOL, code, 0)
        M.free_tool_id(TOOL)
        M.restart_events()


def make_function(source: str, name: str):
    """A fresh code object each call, from source, so tables start empty."""
    namespace: dict = {}
    exec(compile(textwrap.dedent(source), f"<test {name}>", "exec"), namespace)
    return namespace[name]


LOOP = """
def loop(n):
    total = 0
    for i in range(n):
        total += i
        if i < 0:
            total = -1
    return total
"""
# Line numbers inside LOOP's code (line 1 is the blank line after the opening quotes).
LOOP_HOT_LINE = 5      # total += i
LOOP_NEVER_LINE = 7    # total = -1


class TestLineFiltering:
    def test_non_breakpoint_lines_are_disabled_in_c_once_per_location(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_NEVER_LINE: None}
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            assert loop(1000) == sum(range(1000))
            first = tracer.stats()["line_disable"]
            assert loop(1000) == sum(range(1000))
            assert tracer.stats()["line_disable"] == first, "a DISABLEd location fired again"
            M.restart_events()
            loop(1000)
            assert tracer.stats()["line_disable"] == 2 * first, "restart_events re-arms each location once"
        assert target.calls == []
        assert 0 < first < 10

    def test_breakpoint_line_is_forwarded_with_the_original_arguments(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: None}
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            loop(50)
        assert target.calls == [(loop.__code__, LOOP_HOT_LINE)] * 50
        assert tracer.stats()["line_forward"] == 50

    def test_false_condition_is_filtered_in_c_without_calling_the_target(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: condition("i == 7")}
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            loop(100)
        assert target.calls == [(loop.__code__, LOOP_HOT_LINE)]   # only i == 7
        stats = tracer.stats()
        assert stats["condition_false"] == 99
        assert stats["condition_forward"] == 1

    def test_condition_sees_globals_and_locals(self):
        func = make_function("""
            LIMIT = 3
            def f(values):
                found = []
                for value in values:
                    found.append(value)
                return found
        """, "f")
        bps = Breakpoints()
        bps.lines["f"] = {6: condition("value > LIMIT and len(found) > 0")}
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[func.__code__]):
            f_result = func([1, 5, 2, 9])
        assert f_result == [1, 5, 2, 9]
        assert len(target.calls) == 2   # value 5 and value 9

    def test_condition_that_raises_goes_to_the_target_which_reports_it(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: condition("undefined_name > 1")}
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            assert loop(5) == 10
        assert len(target.calls) == 5
        assert tracer.stats()["errors"] == 0, "a raising condition is pydevd's to report, not an engine error"

    def test_an_exception_in_flight_survives_condition_evaluation(self):
        func = make_function("""
            def f():
                try:
                    raise KeyError("kept")
                except KeyError as exc:
                    seen = exc
                    return seen
        """, "f")
        bps = Breakpoints()
        bps.lines["f"] = {6: condition("1 / 0")}
        with trampolines(bps, {E.LINE: RecordingTarget()}, local_to=[func.__code__]):
            result = func()
        assert isinstance(result, KeyError) and result.args == ("kept",)


class TestSlowMode:
    def test_everything_is_forwarded_while_someone_steps(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.stepping = True
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            tracer.enter_slow()
            loop(3)
            assert tracer.slow
            forwarded = len(target.calls)
            assert forwarded >= 3 * 2
            bps.stepping = False
            tracer.enter_slow()           # resets the recheck clock, as pydevd's next monitoring call does
            M.restart_events()
            loop(3)
            assert not tracer.slow
        assert tracer.stats()["slow_forward"] >= forwarded

    def test_enter_slow_during_recheck_keeps_slow_mode(self):
        bps = Breakpoints()
        loop = make_function(LOOP, "loop")
        tracer_box = []

        def need_slow():
            tracer_box[0].enter_slow()    # pydevd re-armed slow mode while we asked
            return False

        tracer = _fasttrace.Tracer(M.DISABLE, bps.compute, need_slow)
        tracer_box.append(tracer)
        M.use_tool_id(TOOL, "fastattach-test")
        try:
            M.register_callback(TOOL, E.LINE, tracer.trampoline(_fasttrace.LINE, RecordingTarget()))
            M.set_events(TOOL, E.LINE)
            loop(2)
        finally:
            M.register_callback(TOOL, E.LINE, None)
            M.set_events(TOOL, 0)
            M.free_tool_id(TOOL)
            M.restart_events()
        assert tracer.slow


class TestPyStartAndJump:
    def test_py_start_forwards_only_breakpoint_code_not_yet_line_traced(self):
        with_bp = make_function(LOOP, "loop")
        without_bp = make_function("def other():\n    return 1\n", "other")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: None}
        target = RecordingTarget()
        with trampolines(bps, {E.PY_START: target}, local_to=[with_bp.__code__, without_bp.__code__]) as tracer:
            with_bp(1)
            without_bp()
            assert [call[0] for call in target.calls] == [with_bp.__code__]
            tracer.note_local_events(with_bp.__code__, True)   # pydevd armed LINE there
            M.restart_events()
            with_bp(1)
            assert len(target.calls) == 1
            assert tracer.stats()["start_disable"] >= 2

    def test_line_traced_note_belongs_to_the_tracer_that_saw_it(self):
        func = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: None}
        with trampolines(bps, {E.PY_START: RecordingTarget()}, local_to=[func.__code__]) as old_tracer:
            old_tracer.note_local_events(func.__code__, True)
        # A new pydevd (after stop() and listen()) has armed nothing yet: it must see PY_START.
        target = RecordingTarget()
        with trampolines(bps, {E.PY_START: target}, local_to=[func.__code__]):
            func(1)
        assert len(target.calls) == 1

    def test_function_breakpoint_forwards_py_start(self):
        func = make_function("def named():\n    return 2\n", "named")
        bps = Breakpoints()
        bps.function_names.add("named")
        target = RecordingTarget()
        with trampolines(bps, {E.PY_START: target}, local_to=[func.__code__]):
            func()
            func()
        assert len(target.calls) == 2

    def test_jump_forwards_only_backward_jumps_onto_breakpoint_lines(self):
        func = make_function("""
            def spin(n):
                i = 0
                while i < n: i += 1
                return i
        """, "spin")
        bps = Breakpoints()
        bps.lines["spin"] = {4: None}
        target = RecordingTarget()
        with trampolines(bps, {E.JUMP: target}, local_to=[func.__code__]) as tracer:
            assert func(20) == 20
        assert target.calls, "the one-line loop's backward jump must reach pydevd"
        assert all(to <= frm for _, frm, to in target.calls)
        assert tracer.stats()["jump_forward"] == len(target.calls)


class TestNeverRaises:
    def test_compute_failure_is_recorded_and_the_event_forwarded(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.fail_with = RuntimeError("compute broke")
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            assert loop(3) == 3
        assert target.calls, "when the cache cannot answer, pydevd decides"
        error = tracer.take_error()
        assert isinstance(error, RuntimeError) and str(error) == "compute broke"
        assert tracer.take_error() is None
        assert tracer.stats()["errors"] >= 1

    def test_target_failure_never_reaches_user_code(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: None}
        target = RecordingTarget(raises=ValueError("pydevd broke"))
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            assert loop(4) == 6
        assert isinstance(tracer.take_error(), ValueError)

    def test_bad_compute_answer_is_recorded_not_raised(self):
        loop = make_function(LOOP, "loop")
        tracer_answers = Breakpoints()
        tracer_answers.compute = lambda code: ("not", "a table")   # type: ignore[method-assign]
        with trampolines(tracer_answers, {E.LINE: RecordingTarget()}, local_to=[loop.__code__]) as tracer:
            assert loop(2) == 1
        assert isinstance(tracer.take_error(), TypeError)

    def test_closed_tracer_only_forwards(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            tracer.close()
            loop(2)
        assert len(target.calls) > 2
        assert tracer.stats()["line_disable"] == 0


class TestTheProgramsExceptions:
    """KeyboardInterrupt and SystemExit (Ctrl-C, a SIGTERM handler's sys.exit) are the program's:
    they go on to its frame, from pydevd's callback or from a condition evaluated in C."""

    @pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
    def test_from_the_target_it_reaches_the_program(self, exception):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: None}
        with trampolines(bps, {E.LINE: RecordingTarget(raises=exception("from a signal handler"))},
                         local_to=[loop.__code__]) as tracer:
            with pytest.raises(exception, match="from a signal handler"):
                loop(3)
        assert tracer.stats()["errors"] == 0 and tracer.take_error() is None

    @pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
    def test_from_a_condition_it_reaches_the_program(self, exception):
        namespace = {"exception": exception}
        exec(compile(textwrap.dedent(LOOP), "<test interrupted condition>", "exec"), namespace)
        exec("def arrives():\n    raise exception('while the condition ran')", namespace)
        loop = namespace["loop"]
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: condition("arrives()")}
        target = RecordingTarget()
        with trampolines(bps, {E.LINE: target}, local_to=[loop.__code__]) as tracer:
            with pytest.raises(exception, match="while the condition ran"):
                loop(3)
        assert target.calls == [], "the program's exception is not handed to pydevd as the condition's error"
        assert tracer.stats()["errors"] == 0


class TestLifetime:
    def test_a_trampoline_replaced_from_inside_its_own_callback_stays_alive(self):
        """What pydevd does while a thread is suspended in its LINE callback: it registers its
        callback again, which drops sys.monitoring's only reference to the running trampoline,
        and then the callback fails. Under ASan (scripts/asan.sh) a use after free shows here."""
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: None}
        tracer = _fasttrace.Tracer(M.DISABLE, bps.compute, bps.need_slow)
        replacement = RecordingTarget()
        running = []

        def reregisters_then_fails(code, line):
            M.register_callback(TOOL, E.LINE, tracer.trampoline(_fasttrace.LINE, replacement))
            gc.collect()
            running.append(line)
            raise ValueError("pydevd failed after re-registering")

        M.use_tool_id(TOOL, "fastattach-test")
        try:
            M.register_callback(TOOL, E.LINE, tracer.trampoline(_fasttrace.LINE, reregisters_then_fails))
            M.set_local_events(TOOL, loop.__code__, E.LINE)
            assert loop(3) == 3
        finally:
            M.register_callback(TOOL, E.LINE, None)
            M.set_local_events(TOOL, loop.__code__, 0)
            M.free_tool_id(TOOL)
            M.restart_events()
        assert len(running) == 1 and len(replacement.calls) == 2
        error = tracer.take_error()
        assert isinstance(error, ValueError) and tracer.stats()["errors"] == 1


class TestCache:
    def test_changed_breakpoints_invalidate_the_cache(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_NEVER_LINE: None}
        with trampolines(bps, {E.LINE: RecordingTarget()}, local_to=[loop.__code__]) as tracer:
            loop(1)
            assert tracer.cached_lines(loop.__code__) == (LOOP_NEVER_LINE,)
            computed = tracer.stats()["compute"]
            bps.lines["loop"] = {LOOP_HOT_LINE: None, LOOP_NEVER_LINE: None}
            tracer.breakpoints_changed()
            assert tracer.cached_lines(loop.__code__) is None, "stale table still served"
            M.restart_events()
            loop(1)
            assert tracer.cached_lines(loop.__code__) == (LOOP_HOT_LINE, LOOP_NEVER_LINE)
            assert tracer.stats()["compute"] == computed + 1

    def test_tables_are_computed_once_per_generation(self):
        loop = make_function(LOOP, "loop")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: condition("i < 0")}
        with trampolines(bps, {E.LINE: RecordingTarget()}, local_to=[loop.__code__]) as tracer:
            loop(500)
        assert tracer.stats()["compute"] == 1

    def test_a_new_tracer_never_sees_an_old_tracers_table(self):
        loop = make_function(LOOP, "loop")
        old = Breakpoints()
        old.lines["loop"] = {LOOP_HOT_LINE: None}
        with trampolines(old, {E.LINE: RecordingTarget()}) as tracer:
            loop(1)
            assert tracer.cached_lines(loop.__code__) == (LOOP_HOT_LINE,)
        with trampolines(Breakpoints(), {E.LINE: RecordingTarget()}) as tracer:
            assert tracer.cached_lines(loop.__code__) is None

    def test_tables_are_freed_with_their_code_objects(self):
        loop = make_function(LOOP, "loop")
        cond = condition("i == -1")
        bps = Breakpoints()
        bps.lines["loop"] = {LOOP_HOT_LINE: cond}
        with trampolines(bps, {E.LINE: RecordingTarget()}, local_to=[loop.__code__]):
            loop(3)
        code_ref = weakref.ref(loop.__code__)
        condition_ref = weakref.ref(cond)
        refs_before = sys.getrefcount(cond)
        bps.lines.clear()
        del loop, cond
        gc.collect()
        assert code_ref() is None, "the table kept its code object alive"
        assert condition_ref() is None, f"the table's condition leaked (refcount was {refs_before})"

    def test_many_short_lived_code_objects_do_not_accumulate(self):
        bps = Breakpoints()
        with trampolines(bps, {E.LINE: RecordingTarget(), E.PY_START: RecordingTarget()}):
            for _ in range(50):
                make_function(LOOP, "loop")(10)
            gc.collect()
            before = len(gc.get_objects())
            for _ in range(500):
                make_function(LOOP, "loop")(10)
            gc.collect()
            after = len(gc.get_objects())
        assert after - before < 100


class TestModule:
    def test_uncached_reimport_gives_a_new_module_and_reuses_the_extra_slot(self):
        import fastattach

        original = sys.modules["fastattach._fasttrace"]
        try:
            modules = []
            # More imports than there are code-extra slots (255): each must reuse ours.
            for _ in range(300):
                del sys.modules["fastattach._fasttrace"]
                modules.append(importlib.import_module("fastattach._fasttrace"))
            assert modules[0] is not modules[1] is not original
            tracer = modules[-1].Tracer(M.DISABLE, Breakpoints().compute, lambda: False)
            assert tracer.generation > 0
        finally:
            # import_module also rebinds the package attribute, which `from . import` reads.
            sys.modules["fastattach._fasttrace"] = original
            fastattach._fasttrace = original

    def test_trampolines_cannot_be_created_directly(self):
        with pytest.raises(TypeError):
            _fasttrace.Trampoline()

    def test_trampoline_rejects_unknown_kind_and_non_callable(self):
        tracer = _fasttrace.Tracer(M.DISABLE, Breakpoints().compute, lambda: False)
        with pytest.raises(ValueError):
            tracer.trampoline(7, print)
        with pytest.raises(TypeError):
            tracer.trampoline(_fasttrace.LINE, 42)

    def test_trampoline_exposes_its_target_for_verification(self):
        tracer = _fasttrace.Tracer(M.DISABLE, Breakpoints().compute, lambda: False)
        tramp = tracer.trampoline(_fasttrace.LINE, print)
        assert tramp.target is print and tramp.kind == _fasttrace.LINE


# -- 3.12: superinstructions formed again in place ----------------------------------------

def _pairs_of_locals(a, b):
    x = a
    y = b
    return x + y + a * b


def _superinstructions(code) -> list[str]:
    import dis

    return [i.opname for i in dis.get_instructions(code, adaptive=True) if "__" in i.opname]


@contextlib.contextmanager
def _tool_on_py_start():
    """Another tool whose PY_START answers DISABLE: on 3.12 that alone undoes superinstructions."""
    monitoring = sys.monitoring
    monitoring.use_tool_id(4, "test")
    monitoring.register_callback(4, monitoring.events.PY_START, lambda code, offset: monitoring.DISABLE)
    monitoring.set_events(4, monitoring.events.PY_START)
    try:
        yield monitoring
    finally:
        monitoring.set_events(4, 0)
        monitoring.set_local_events(4, _pairs_of_locals.__code__, 0)
        monitoring.register_callback(4, monitoring.events.PY_START, None)
        monitoring.free_tool_id(4)


def test_superinstructions_are_formed_again_exactly_as_at_creation():
    from fastattach.engine import superinstructions as _requicken

    if not _requicken.NEEDED:
        assert _fasttrace.reform_superinstructions(_pairs_of_locals.__code__) == 0
        return
    _fasttrace.set_superinstruction_table(*_requicken.superinstruction_table())
    code = _pairs_of_locals.__code__
    fresh = _superinstructions(code)
    assert fresh, "the pairs of this function make superinstructions on 3.12"
    with _tool_on_py_start() as monitoring:
        assert _pairs_of_locals(2, 3) == 11 and _superinstructions(code) == []
        assert _fasttrace.reform_superinstructions(code) == len(fresh)
        assert _superinstructions(code) == fresh and _pairs_of_locals(2, 3) == 11
        # Where an event besides PY_START is armed, CPython undoes them and they stay undone.
        monitoring.set_local_events(4, code, monitoring.events.LINE)
        assert _superinstructions(code) == [] and _fasttrace.reform_superinstructions(code) == 0
        assert _pairs_of_locals(2, 3) == 11


def test_superinstruction_table_is_checked():
    with pytest.raises(ValueError, match="256, 256 and 8 bytes"):
        _fasttrace.set_superinstruction_table(b"", b"", b"")
    with pytest.raises(TypeError):
        _fasttrace.reform_superinstructions("not code")


def test_superinstructions_formed_again_match_a_fresh_quickening_everywhere():
    """Every function of a few stdlib modules, instrumented and then formed again: the
    same superinstructions at the same offsets as a freshly created copy, and no other
    opcode changed.  A wrong walk over inline caches would show here (and under ASan)."""
    import ast
    import dis
    import email.message
    import json.decoder
    import types

    from fastattach.engine import superinstructions as _requicken

    def opnames(code):
        return [(i.offset, i.opname) for i in dis.get_instructions(code, adaptive=True)]

    def supers(listing):
        return [entry for entry in listing if "__" in entry[1]]

    modules = (ast, email.message, json.decoder, textwrap, contextlib)
    codes = {id(f.__code__): f.__code__ for module in modules for f in vars(module).values()
             if type(f) is types.FunctionType}
    codes.update({id(f.__code__): f.__code__ for module in modules for cls in vars(module).values()
                  if isinstance(cls, type) for f in vars(cls).values() if type(f) is types.FunctionType})
    if not _requicken.NEEDED:
        assert all(_fasttrace.reform_superinstructions(code) == 0 for code in codes.values())
        return
    _fasttrace.set_superinstruction_table(*_requicken.superinstruction_table())
    monitoring = sys.monitoring
    monitoring.use_tool_id(4, "test")
    formed = 0
    try:
        for code in codes.values():
            wanted = supers(opnames(code.replace()))
            monitoring.set_local_events(4, code, monitoring.events.PY_START)   # CPython undoes them
            monitoring.set_local_events(4, code, 0)
            before = opnames(code)
            formed += _fasttrace.reform_superinstructions(code)
            after = opnames(code)
            assert supers(after) == wanted, code.co_qualname
            assert [a for a, b in zip(before, after) if a != b and "__" not in b[1]] == [], code.co_qualname
    finally:
        monitoring.free_tool_id(4)
    assert len(codes) > 200 and formed > 500

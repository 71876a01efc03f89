"""Conditions C evaluates as a function of the frame's variables (engine/conditions.py).

Every scenario runs twice on the real C engine: once with the condition compiler (the
fast path where it is exact) and once without it (the general path, pydevd's
``eval(condition, f_globals, f_locals)``).  The hits that reach the target (pydevd's
callback) must be the same, with the same frame values; the counters show which path ran.
"""

from __future__ import annotations

import contextlib
import sys
import textwrap

import pytest

from fastattach import _fasttrace
from fastattach.engine import conditions

M = sys.monitoring
E = M.events
TOOL = 4


class FrameRecorder:
    """Stands in for pydevd's LINE callback: records the frame's variables at each forwarded
    hit (plain values as they are, others by type, so two runs compare equal)."""

    def __init__(self):
        self.hits = []

    def __call__(self, code, line):
        variables = {name: value if isinstance(value, (int, str, float, type(None))) else type(value).__name__
                     for name, value in sys._getframe(1).f_locals.items()}
        self.hits.append((code.co_name, line, variables))


@contextlib.contextmanager
def engine(breakpoints: dict, codes, *, fast: bool):
    """A Tracer for tool 4 whose table puts breakpoints {co_name: {line: condition}} in codes."""
    def compute(code):
        entries = tuple(breakpoints.get(code.co_name, {}).items())
        return (False, entries) if entries else None

    target = FrameRecorder()
    tracer = _fasttrace.Tracer(M.DISABLE, compute, lambda: False)
    _fasttrace.set_condition_compiler(conditions.function_for if fast else None)
    M.use_tool_id(TOOL, "fastattach-test")
    try:
        M.register_callback(TOOL, E.LINE, tracer.trampoline(_fasttrace.LINE, target))
        for code in codes:
            M.set_local_events(TOOL, code, E.LINE)
        yield tracer, target
    finally:
        M.register_callback(TOOL, E.LINE, None)
        for code in codes:
            M.set_local_events(TOOL, code, 0)
        M.free_tool_id(TOOL)
        M.restart_events()
        _fasttrace.set_condition_compiler(conditions.function_for)


def build(source: str, name: str, namespace: dict | None = None):
    namespace = {} if namespace is None else namespace
    exec(compile(textwrap.dedent(source), f"<test {name}>", "exec"), namespace)
    return namespace


def run_both(source: str, entry: str, breakpoints: dict, call, *, codes=None):
    """Run call(namespace[entry]) under the engine with and without the fast path, each on
    fresh code; return {fast: (hits, stats, error)}."""
    outcome = {}
    for fast in (True, False):
        namespace = build(source, entry)
        compiled = {name: {line: conditions.compile_condition(cond, "<breakpoint condition>")
                           for line, cond in lines.items()} for name, lines in breakpoints.items()}
        code_objects = codes(namespace) if codes else [namespace[entry].__code__]
        with engine(compiled, code_objects, fast=fast) as (tracer, target):
            call(namespace[entry])
        outcome[fast] = (target.hits, tracer.stats(), tracer.take_error())
    assert outcome[True][2] is None and outcome[False][2] is None, outcome
    assert outcome[True][0] == outcome[False][0], "the fast path changed which hits reach pydevd"
    return outcome


LOOP = """
LIMIT = 5
def loop(n, step):
    total = 0
    for i in range(0, n, step):
        total += i
    return total
"""
LOOP_LINE = 6   # total += i


class TestSameHitsOnBothPaths:
    @pytest.mark.parametrize("cond", [
        "i == 7",                    # locals only
        "i > LIMIT and step == 1",   # a global and a parameter
        "len(str(i)) == 2",          # builtins
        "i % 3 == 0 or total > 40",
        "i in (1, 2, 3)",
        "[i][0] == 4",               # a list display is no comprehension
        "f'{i}' == '9'",
    ])
    def test_a_condition_on_locals_globals_and_builtins_takes_the_fast_path(self, cond):
        out = run_both(LOOP, "loop", {"loop": {LOOP_LINE: cond}}, lambda f: f(20, 1))
        fast_stats, general_stats = out[True][1], out[False][1]
        assert fast_stats["condition_fast"] == 20
        assert general_stats["condition_fast"] == 0
        assert out[True][0], "some hit holds"

    @pytest.mark.parametrize("cond", [
        "(j := i) == 3",                 # assigns into the frame's locals
        "any(x == 3 for x in [i])",      # a scope of its own
        "[x for x in (i,)] == [3]",
        "(lambda: i)() == 3",
        "locals()['i'] == 3",
        "eval('i') == 3",
        "sys._getframe().f_locals.get('i') == 3",
    ])
    def test_a_condition_a_function_scope_would_change_takes_the_general_path(self, cond):
        namespace_source = "import sys\n" + LOOP
        out = run_both(namespace_source, "loop", {"loop": {LOOP_LINE + 1: cond}}, lambda f: f(8, 1))
        assert out[True][1]["condition_fast"] == 0
        assert out[True][1]["condition_false"] == out[False][1]["condition_false"]

    def test_an_unbound_local_falls_back_to_the_global_of_that_name(self):
        source = """
            late = "global"
            def f(flag):
                if flag:
                    late = "local"
                return flag
        """
        # `late` is a local of f but unbound on the line `return flag` when flag is false:
        # eval then reads the global, which the fast path must also do.
        out = run_both(source, "f", {"f": {6: "late == 'global'"}}, lambda f: (f(False), f(True), f(False)))
        hits = out[True][0]
        assert [hit[2] for hit in hits] == [{"flag": False}, {"flag": False}]
        assert out[True][1]["condition_fast"] == 1   # only the bound case
        assert out[True][1]["condition_false"] == 1

    def test_cells_and_free_variables_are_read_from_the_frame(self):
        source = """
            def outer(limit):
                seen = []
                def inner(x):
                    seen.append(x)
                    return x
                for k in range(6):
                    inner(k)
                return seen
        """
        # Line 5 is in inner (free variable `seen`), line 8 in outer (cell `seen`).
        breakpoints = {"inner": {5: "len(seen) == 2 and x == 2"}, "outer": {8: "k == limit and len(seen) == 3"}}
        def nested_code(code):
            # By type, not index: 3.14 no longer puts None first in co_consts.
            return next(c for c in code.co_consts if hasattr(c, "co_name"))

        out = run_both(source, "outer", breakpoints, lambda f: f(3),
                       codes=lambda ns: [ns["outer"].__code__, nested_code(ns["outer"].__code__)])
        assert nested_code(build(source, "outer")["outer"].__code__).co_name == "inner"
        assert [(name, line) for name, line, _ in out[True][0]] == [("inner", 5), ("outer", 8)]
        assert out[True][1]["condition_fast"] == 6 + 6

    def test_module_and_class_bodies_take_the_general_path(self):
        source = """
            class Box:
                size = 3
                double = size * 2
        """
        namespace = build(source, "Box")
        del namespace
        for fast in (True, False):
            body = compile(textwrap.dedent(source), "<test class body>", "exec")
            class_code = next(c for c in body.co_consts if hasattr(c, "co_name"))
            cond = {"Box": {4: conditions.compile_condition("size == 3", "<breakpoint condition>")}}
            with engine(cond, [class_code], fast=fast) as (tracer, target):
                exec(body, {})
            assert [(name, line) for name, line, _ in target.hits] == [("Box", 4)]
            assert tracer.stats()["condition_fast"] == 0
            assert tracer.take_error() is None

    def test_a_frame_with_other_globals_takes_the_general_path(self):
        source = "def f():\n    x = MARK\n    return x\n"
        code = compile(source, "<test shared code>", "exec")
        first, second = {"MARK": 1}, {"MARK": 2}
        exec(code, first)
        f_code = first["f"].__code__
        import types
        other = types.FunctionType(f_code, second)   # the same code object, other globals
        cond = {"f": {3: conditions.compile_condition("x == MARK", "<breakpoint condition>")}}
        with engine(cond, [f_code], fast=True) as (tracer, target):
            first["f"]()
            other()
        assert len(target.hits) == 2
        stats = tracer.stats()
        assert stats["condition_fast"] == 1, "the frame whose globals the function was made with"
        assert tracer.take_error() is None


OBJECTS = """
class Weird:
    def __eq__(self, other):
        return "truthy" if other == 3 else 0
    def __lt__(self, other):
        raise TypeError("no order")
    __hash__ = None
class Bag:
    def __contains__(self, item):
        return item == 2
def scan(values, bag):
    seen = None
    for v in values:
        seen = v
    return seen
"""
OBJECTS_LINE = 14   # seen = v


class TestComparisonsMadeInC:
    """One comparison of variables and constants is made by C itself (ft_compare): the same
    hits as eval, for the odd objects too (non-bool results, raising and reflected methods)."""

    @pytest.mark.parametrize("cond", [
        "v == 3", "3 == v", "v != 3", "v < 3", "v >= 2", "v is None", "v is not None", "v != v",
        "v in bag", "v not in bag", "v in (2, 3)", "v == -1",
    ])
    def test_the_same_hits_as_eval(self, cond):
        def call(scan):
            import math
            namespace_weird = scan.__globals__["Weird"]
            scan([1, 3, namespace_weird(), None, math.nan, 2, -1], scan.__globals__["Bag"]())
        out = run_both(OBJECTS, "scan", {"scan": {OBJECTS_LINE: cond}}, call)
        assert out[True][1]["condition_fast"] == 7
        assert out[False][1]["condition_fast"] == 0
        compiled = conditions.compile_condition(cond, "<c>")
        namespace = build(OBJECTS, "scan")
        assert conditions.function_for(compiled, namespace["scan"].__code__, namespace)[2] is not None


class TestErrors:
    def test_a_raising_condition_goes_to_pydevd_on_the_fast_path_too(self):
        out = run_both(LOOP, "loop", {"loop": {LOOP_LINE: "i / 0 > 1"}}, lambda f: f(4, 1))
        assert len(out[True][0]) == 4, "pydevd evaluates it again and reports the error"
        assert out[True][1]["condition_fast"] == 4
        assert out[True][1]["errors"] == 0

    @pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
    def test_the_programs_exception_reaches_it_from_the_fast_path(self, exception):
        namespace = build(LOOP, "loop")
        namespace["stop"] = lambda: (_ for _ in ()).throw(exception("from the condition"))
        cond = {"loop": {LOOP_LINE: conditions.compile_condition("i == 2 and stop()", "<breakpoint condition>")}}
        with engine(cond, [namespace["loop"].__code__], fast=True) as (tracer, target):
            with pytest.raises(exception, match="from the condition"):
                namespace["loop"](10, 1)
        assert target.hits == []
        assert tracer.stats()["condition_fast"] == 3

    def test_an_exception_in_flight_survives_the_fast_path(self):
        source = """
            def f():
                try:
                    raise ValueError("in flight")
                except ValueError:
                    x = 1
                    return sys.exception()
        """
        namespace = build("import sys\n" + textwrap.dedent(source), "f")
        cond = {"f": {8: conditions.compile_condition("x == 2", "<breakpoint condition>")}}   # return ...
        with engine(cond, [namespace["f"].__code__], fast=True) as (tracer, target):
            exc = namespace["f"]()
        assert isinstance(exc, ValueError) and str(exc) == "in flight"
        assert tracer.stats()["condition_fast"] == 1


class TestFunctionFor:
    def test_parameters_are_the_frame_variables_the_condition_reads(self):
        def sample(a, b):
            c = a + b
            return c
        cond = conditions.compile_condition("a < c and LIMIT > b and len(d) == 0", "<c>")
        globals_ = {"LIMIT": 9, "d": ()}
        function, names, comparison = conditions.function_for(cond, sample.__code__, globals_)
        assert names == ("a", "c", "b")
        assert function(1, 3, 2) is True
        assert function.__globals__ is globals_
        assert comparison is None, "not a single comparison"

    @pytest.mark.parametrize(("cond", "comparison"), [
        ("a == 3", (2, 0, 0, 1, 3)),
        ("-1 < a", (0, 1, -1, 0, 0)),          # folded as the compiler folds it; never swapped
        ("a is not None", (7, 0, 0, 1, None)),
        ("a in (1, 2)", (8, 0, 0, 1, (1, 2))),
        ("a not in b", (9, 0, 0, 0, 1)),
        ("a == LIMIT", None),                   # a global: the function reads it
        ("a < b < 3", None),                    # chained
        ("1 == 1", None),
    ])
    def test_one_comparison_of_variables_and_constants_is_made_in_c(self, cond, comparison):
        def sample(a, b):
            return a, b
        compiled = conditions.compile_condition(cond, "<c>")
        assert conditions.function_for(compiled, sample.__code__, {})[2] == comparison

    def test_a_condition_compiled_elsewhere_has_no_function(self):
        def sample(a):
            return a
        assert conditions.function_for(compile("a", "<c>", "eval"), sample.__code__, {}) is None

    def test_too_many_variables_take_the_general_path(self):
        names = [f"v{i}" for i in range(conditions.MAX_VARIABLES + 1)]
        namespace = build(f"def many({', '.join(names)}):\n    return 0\n", "many")
        cond = conditions.compile_condition(" + ".join(names) + " > 0", "<c>")
        assert conditions.function_for(cond, namespace["many"].__code__, namespace) is None

    def test_the_engine_rejects_a_malformed_answer_of_the_compiler(self):
        namespace = build(LOOP, "loop")
        cond = {"loop": {LOOP_LINE: conditions.compile_condition("i == 1", "<c>")}}
        with engine(cond, [namespace["loop"].__code__], fast=True) as (tracer, target):
            _fasttrace.set_condition_compiler(lambda condition, code, globals_: ("not", "a pair of that shape"))
            namespace["loop"](3, 1)
            error = tracer.take_error()
        assert isinstance(error, TypeError) and "condition compiler" in str(error)
        # With no table every event goes to pydevd, which is always safe.
        assert len([hit for hit in target.hits if hit[1] == LOOP_LINE]) == 3
        assert {hit[1] for hit in target.hits} > {LOOP_LINE}

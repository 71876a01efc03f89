"""Unit tests of the benchmark harness: statistics, run order, line choice, set-up checks.

No timing is asserted anywhere: these tests check the arithmetic and the decisions.
"""

from __future__ import annotations

import os
import sysconfig
import textwrap

import pytest

from fastattach.bench import target
from fastattach.bench.harness import SetupNotEffective, check_breakpoints_verified, check_setup_held
from fastattach.bench.lines import LOGPOINT_HITS_PER_UNIT, NoSuitableLine, choose_lines, inner_repeats
from fastattach.bench.report import ratio_table
from fastattach.bench.scenarios import (
    BASELINE,
    REFERENCE_SCENARIO,
    SCENARIOS,
    NotApplicable,
    ScenarioSetup,
    probe_line,
    scenario_setup,
    write_support_files,
)
from fastattach.bench.schedule import interleave
from fastattach.bench.stats import geometric_mean, linear_slope, paired_differences, paired_ratios, rotated, summarize


def run(mode, seconds, rep=0, scenario=4, ok=True, workload="w", python="3.12"):
    return {"python": python, "workload": workload, "scenario": scenario, "mode": mode, "rep": rep,
            "ok": ok, "seconds": seconds}


class TestStatistics:
    def test_summary_is_median_and_range(self):
        summary = summarize([3.0, 1.0, 2.0, 10.0])
        assert (summary.median, summary.low, summary.high, summary.count) == (2.5, 1.0, 10.0, 4)

    def test_summary_of_nothing_is_an_error(self):
        with pytest.raises(ValueError):
            summarize([])

    def test_ratios_pair_each_run_with_the_baseline_of_its_repetition(self):
        runs = [run("none", 2.0, rep=0), run("debugpy", 8.0, rep=0), run("fastattach", 2.2, rep=0),
                run("none", 4.0, rep=1), run("debugpy", 12.0, rep=1), run("fastattach", 4.0, rep=1)]
        ratios = paired_ratios(runs)
        assert ratios[("3.12", "w", 4, "debugpy")] == [4.0, 3.0]
        assert ratios[("3.12", "w", 4, "fastattach")] == pytest.approx([1.1, 1.0])

    def test_failed_runs_and_orphans_give_no_ratio(self):
        runs = [run("none", 2.0, rep=0, ok=False), run("debugpy", 8.0, rep=0),
                run("none", 2.0, rep=1), run("debugpy", 1.0, rep=1, ok=False),
                run("fastattach", 1.0, rep=2)]
        assert paired_ratios(runs) == {}

    def test_ratios_never_mix_scenarios_workloads_or_pythons(self):
        runs = [run("none", 1.0, scenario=3), run("debugpy", 5.0, scenario=4),
                run("none", 1.0, workload="a"), run("debugpy", 5.0, workload="b"),
                run("none", 1.0, python="3.13"), run("debugpy", 5.0, python="3.12", workload="c")]
        assert paired_ratios(runs) == {}

    def test_per_event_cost_divides_the_paired_difference(self):
        runs = [run("none", 1.0, scenario=5), run("debugpy", 3.0, scenario=5)]
        assert paired_differences(runs, lambda r: 1000) == {("3.12", "w", 5, "debugpy"): [0.002]}

    def test_geometric_mean_and_slope(self):
        assert geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
        assert linear_slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == pytest.approx(2.0)
        assert linear_slope([(0, 1.0)]) == 0.0

    def test_samples_needed_for_a_sample_duration(self):
        assert inner_repeats(0.004, 0.1) == 25
        assert inner_repeats(0.5, 0.1) == 1
        assert inner_repeats(0.0, 0.1) == 1


class TestInterleaving:
    def test_each_group_is_baseline_and_every_mode_back_to_back(self):
        order = interleave(["py"], ["w1", "w2"], [1, 4], ("debugpy", "fastattach"), (), repeat=1)
        assert [(k.workload, k.scenario, k.mode) for k in order] == [
            ("w1", 1, "none"), ("w1", 1, "debugpy"), ("w1", 1, "fastattach"),
            ("w1", 4, "none"), ("w1", 4, "debugpy"), ("w1", 4, "fastattach"),
            ("w2", 1, "none"), ("w2", 1, "debugpy"), ("w2", 1, "fastattach"),
            ("w2", 4, "none"), ("w2", 4, "debugpy"), ("w2", 4, "fastattach"),
        ]

    def test_the_mode_order_rotates_between_repetitions(self):
        assert rotated(("a", "b", "c"), 0) == ("a", "b", "c")
        assert rotated(("a", "b", "c"), 1) == ("b", "c", "a")
        assert rotated(("a", "b", "c"), 5) == ("c", "a", "b")
        order = interleave(["py"], ["w"], [2], ("debugpy", "fastattach"), (), repeat=3)
        assert [k.mode for k in order] == ["none", "debugpy", "fastattach", "debugpy", "fastattach", "none",
                                           "fastattach", "none", "debugpy"]
        assert [k.rep for k in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]

    def test_references_form_their_own_group_with_a_baseline(self):
        order = interleave(["p1", "p2"], ["w"], [3], ("fastattach",), ("bdb", "coverage"), repeat=2)
        groups: dict = {}
        for key in order:
            groups.setdefault((key.rep, key.python, key.workload, key.scenario), []).append(key.mode)
        assert len(groups) == 2 * 2 * 2
        for (_rep, _python, _workload, scenario), modes in groups.items():
            expected = {"none", "bdb", "coverage"} if scenario == REFERENCE_SCENARIO else {"none", "fastattach"}
            assert sorted(modes) == sorted(expected)
            assert BASELINE in modes


def entry(function, first_line, lines, counts, file="/w.py"):
    return {"file": file, "function": function, "first_line": first_line, "lines": lines,
            "counts": {str(k): v for k, v in counts.items()}}


class TestLineChoice:
    def test_hottest_function_line_and_never_run_line(self):
        profile = [
            entry("cold", 1, [2, 3], {2: 5, 3: 5}),
            entry("hot", 10, [10, 11, 12, 13, 14, 15], {11: 1000, 12: 50_000, 13: 50_000, 15: 1000}),
        ]
        plan = choose_lines(profile)
        assert (plan.hot_function, plan.hottest_line, plan.hottest_line_hits) == ("hot", 12, 50_000)
        assert (plan.never_function, plan.never_line) == ("hot", 14)

    def test_the_def_line_is_never_chosen_as_a_never_run_line(self):
        plan = choose_lines([entry("hot", 10, [10, 11], {11: 9})])
        assert plan.never_line is None

    def test_falls_back_to_the_hottest_function_that_has_a_never_run_line(self):
        profile = [entry("hot", 10, [10, 11, 12], {11: 900, 12: 900}),
                   entry("warm", 20, [20, 21, 22], {21: 100})]
        plan = choose_lines(profile)
        assert plan.hot_function == "hot"
        assert (plan.never_function, plan.never_line) == ("warm", 22)

    def test_no_never_run_line_anywhere_makes_scenario_4_not_applicable(self, tmp_path):
        plan = choose_lines([entry("hot", 10, [10, 11], {11: 900})])
        assert plan.never_line is None
        files = write_support_files(str(tmp_path))
        with pytest.raises(NotApplicable):
            scenario_setup(4, plan, files.never_run)
        assert plan.hot_file in scenario_setup(7, plan, files.never_run).breakpoints

    def test_logpoint_goes_on_the_line_nearest_its_target_frequency(self):
        profile = [entry("hot", 10, [10, 11, 12, 13],
                         {11: 1_000_000, 12: LOGPOINT_HITS_PER_UNIT * 2, 13: 3})]
        plan = choose_lines(profile)
        assert (plan.logpoint_line, plan.logpoint_hits) == (12, LOGPOINT_HITS_PER_UNIT * 2)

    def test_an_empty_profile_is_an_error(self):
        with pytest.raises(NoSuitableLine):
            choose_lines([entry("idle", 1, [2], {})])

    def test_lines_come_from_the_code_that_really_runs(self, tmp_path):
        source = textwrap.dedent("""\
            def hot(n):
                total = 0
                for k in range(n):
                    total += k          # HOT
                    if total < 0:
                        total = -total  # NEVER
                return total
            """)
        path = tmp_path / "workload.py"
        path.write_text(source)
        namespace: dict = {}
        exec(compile(source, str(path), "exec"), namespace)
        profile = target.count_lines(lambda: namespace["hot"](200), excluded_files={os.path.abspath(__file__)})
        plan = choose_lines(profile)
        tagged = {line.split("# ")[-1]: n for n, line in enumerate(source.splitlines(), 1) if "# " in line}
        assert plan.hot_file == str(path)
        assert plan.hot_function == "hot"
        assert plan.hottest_line in (3, tagged["HOT"], 5)     # the loop header, the body: 200 hits each
        assert plan.hottest_line_hits >= 200
        assert plan.never_line == tagged["NEVER"]


class TestSetupChecks:
    def test_an_unverified_breakpoint_fails_the_run(self):
        requested = {"/a.py": [{"line": 3}, {"line": 5}]}
        check_breakpoints_verified(requested, {"/a.py": [{"verified": True}, {"verified": True}]})
        with pytest.raises(SetupNotEffective, match="did not verify the breakpoint at /a.py:5"):
            check_breakpoints_verified(requested, {"/a.py": [{"verified": True}, {"verified": False}]})

    def test_a_missing_answer_fails_the_run(self):
        with pytest.raises(SetupNotEffective, match="answered 0"):
            check_breakpoints_verified({"/a.py": [{"line": 3}]}, {})

    def test_scenarios_ask_for_the_checks_that_prove_them(self, tmp_path):
        plan = choose_lines([entry("hot", 10, [10, 11, 12, 13], {11: 900, 12: 100})])
        files = write_support_files(str(tmp_path))
        assert not scenario_setup(1, plan, files.never_run).connect
        assert scenario_setup(2, plan, files.never_run).breakpoints == {}
        assert list(scenario_setup(3, plan, files.never_run).breakpoints) == [files.never_run]
        assert scenario_setup(4, plan, files.never_run).breakpoints == {"/w.py": [{"line": 13}]}
        conditional = scenario_setup(5, plan, files.never_run).breakpoints["/w.py"][0]
        assert conditional["line"] == 11 and conditional["condition"]
        assert scenario_setup(6, plan, files.never_run).expect_logpoint_output
        assert scenario_setup(7, plan, files.never_run).detach_before_timing
        for scenario in (2, 3, 4, 5, 6):
            assert scenario_setup(scenario, plan, files.never_run).probe == ("/w.py", 11)

    def test_probe_lines_are_found_in_the_written_file(self, tmp_path):
        files = write_support_files(str(tmp_path))
        with open(files.probes) as probes:
            lines = probes.read().splitlines()
        assert lines[probe_line("LATENCY_BREAK") - 1].rstrip().endswith("# LATENCY_BREAK")
        assert lines[probe_line("SOAK_LOGPOINT") - 1].rstrip().endswith("# SOAK_LOGPOINT")


class TestWorkloads:
    def test_a_pyperformance_benchmark_is_driven_without_pyperf_runner(self):
        path, unit = target.load_workload("deltablue")
        assert path.endswith(os.path.join("bm_deltablue", "run_benchmark.py"))
        unit()

    def test_a_user_script_runs_as_main(self, tmp_path):
        script = tmp_path / "mine.py"
        script.write_text("import sys\nif __name__ == '__main__':\n    sys.modules[__name__].RAN = True\n")
        path, unit = target.load_workload(str(script))
        assert path == str(script)
        unit()

    def test_unknown_workloads_are_refused(self, tmp_path):
        with pytest.raises(LookupError):
            target.load_workload("no_such_benchmark")
        with pytest.raises(LookupError):
            target.load_workload(str(tmp_path / "missing.py"))


def test_the_table_has_a_row_for_every_scenario_even_failed_ones():
    results = {
        "pythons": ["3.12"], "workloads": ["w"], "scenarios": list(SCENARIOS), "modes": ["debugpy", "fastattach"],
        "references": [],
        "ratios": {"3.12|w|4|debugpy": {"median": 80.0, "min": 70.0, "max": 90.0, "n": 3},
                   "3.12|w|4|fastattach": {"failed": "SetupNotEffective: not verified"},
                   "3.12|w|5|fastattach": {"not_applicable": "no line"}},
    }
    table = ratio_table(results)
    for number, label in SCENARIOS.items():
        assert f"| {number}. {label} |" in table
    assert "80.00x (70.00–90.00)" in table
    assert "FAILED" in table and "n/a" in table


class _RecordedEvents:
    """Stands in for DAPClient.events(): the events a client would have received."""

    def __init__(self, events):
        self._events = events

    def events(self, name=None):
        taken = [e for e in self._events if name is None or e["event"] == name]
        self._events = [e for e in self._events if e not in taken]
        return taken


class TestChecksAfterTiming:
    def check(self, events, details=None):
        check_setup_held(_RecordedEvents(events), target=None, setup=ScenarioSetup(), details=details or {},
                         stop_timeout=1)

    def test_nothing_happened_passes(self):
        self.check([{"event": "output", "body": {"output": "x"}}])

    def test_a_stop_during_timing_fails(self):
        with pytest.raises(SetupNotEffective, match="stopped during timing"):
            self.check([{"event": "stopped", "body": {"threadId": 1}}])

    def test_a_breakpoint_switched_off_during_timing_fails(self):
        event = {"event": "breakpoint", "body": {"reason": "changed",
                                                 "breakpoint": {"verified": False, "message": "over budget"}}}
        with pytest.raises(SetupNotEffective, match="over budget"):
            self.check([event])

    def test_a_budget_trip_in_the_filter_counters_fails(self):
        with pytest.raises(SetupNotEffective, match="budget paused"):
            self.check([], details={"filter_stats": {"trips": 1, "budget_paused": 1}})


def minimal_results() -> dict:
    return {
        "command": "python -m fastattach.bench", "date": "2026-01-01T00:00:00+00:00", "elapsed_seconds": 60.0,
        "machine": {"cpu": "cpu", "cores": 2, "platform": "linux",
                    "pythons": {"/py": {"python": "3.12.1", "debugpy": "1.8.22"}}},
        "pythons": ["3.12.1"], "workloads": ["w"], "scenarios": [4], "modes": ["debugpy", "fastattach"],
        "references": [], "repeat": 3, "quick": False, "profiles": {}, "failures": [],
        "ratios": {"3.12.1|w|4|debugpy": {"median": 30.0, "min": 29.0, "max": 31.0, "n": 3},
                   "3.12.1|w|4|fastattach": {"median": 1.01, "min": 1.0, "max": 1.02, "n": 3}},
        "per_evaluation_ns": {}, "latency": {}, "attach": {}, "rss": {}, "startup": {}, "soak": {}, "runs": [],
    }


def test_results_md_is_rebuilt_from_stored_results_with_every_fragment_verbatim(tmp_path):
    import json

    from fastattach.bench import cli
    stored = tmp_path / "stored.json"
    stored.write_text(json.dumps(minimal_results()))
    (tmp_path / "bench" / "results").mkdir(parents=True)
    fragments = {"b_other.md": "## Other\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", "a_first.md": "## First\ntext\n"}
    for name, text in fragments.items():
        (tmp_path / "bench" / "results" / name).write_text(text)
    results_md = tmp_path / "bench" / "RESULTS.md"

    assert cli.main(["--report-only", str(stored), "--results-md", str(results_md)]) == 0

    text = results_md.read_text()
    assert "| 4. breakpoint in the hottest function, on a line that never runs | 30.00x | 1.01x |" in text
    assert text.index(fragments["a_first.md"]) < text.index(fragments["b_other.md"])
    assert text.rstrip("\n").endswith(fragments["b_other.md"].rstrip("\n"))
    assert (tmp_path / "bench" / "RESULTS.png").stat().st_size > 0
    assert json.loads((tmp_path / "bench" / "RESULTS.json").read_text())["ratios"]


@pytest.mark.parametrize("narrowing", [["--sections", "startup"], ["--scenarios", "4"], ["--modes", "fastattach"],
                                       ["--references", ""], ["--quick"], ["--workload", "richards"]])
def test_only_a_full_run_replaces_the_published_results(narrowing):
    from fastattach.bench import cli

    # GIVEN the checkout's benchmarks/ directory, WHEN a run is narrowed in any way,
    # THEN it does not regenerate benchmarks/RESULTS.md (it would replace it with its few rows)
    assert cli.parse_args(narrowing).results_md is None
    # while a full run does, unless told otherwise
    assert cli.parse_args([]).results_md == os.path.join(cli.BENCHMARKS_DIR, "RESULTS.md")


# This interpreter's standard library, wherever it is installed (pyenv, Debian, a venv's base).
STDLIB = sysconfig.get_path("stdlib")
STDLIB_NAME = os.path.basename(STDLIB)   # python3.X


def test_stored_results_name_paths_relative_to_the_checkout():
    from fastattach.bench.cli import relative_to

    # GIVEN results naming interpreters and workload files inside the checkout (as keys and
    # values, in lists) and a path outside it
    results = {"/repo/.venv/3.12/bin/python": {"hot_file": "/repo/w/run.py", "all": ["/repo/a", 1.5]},
               "other": "/usr/lib/python3/x.py", "near": "/repository/x",
               "stdlib": os.path.join(STDLIB, "json", "encoder.py")}
    # WHEN they are made relative to the checkout
    # THEN the paths inside it are relative, an interpreter's library is named without its
    # install location, and other paths stay as they are
    assert relative_to(results, "/repo") == {
        ".venv/3.12/bin/python": {"hot_file": "w/run.py", "all": ["a", 1.5]},
        "other": "/usr/lib/python3/x.py", "near": "/repository/x",
        "stdlib": f"<python>/lib/{STDLIB_NAME}/json/encoder.py"}


def test_paths_inside_captured_text_are_named_generically():
    from fastattach.bench.cli import relative_paths

    # GIVEN captured output (a tracemalloc report) naming files inside and outside the checkout
    text = (f'File "{os.path.join(STDLIB, "linecache.py")}", line 30\n'
            "/repo/python/x.py:184: size=3 KiB /x/repo/y /repository/z .venv/3.12/lib/python3.12/os.py")
    # THEN the same rules hold inside text as for whole values
    assert relative_paths(text, "/repo") == (
        f'File "<python>/lib/{STDLIB_NAME}/linecache.py", line 30\n'
        "python/x.py:184: size=3 KiB /x/repo/y /repository/z .venv/3.12/lib/python3.12/os.py")


def test_soak_iterations_leave_nothing_of_the_workload_behind():
    import gc

    # GIVEN richards, which keeps its tasks from every run, and the soak's fresh code
    _, unit = target.load_workload("richards")

    def objects_after(runs: int, iteration=lambda unit, i: target.soak_iteration(unit, lambda i: None, i)) -> int:
        for i in range(runs):
            iteration(unit, i)
        gc.collect()
        return len(gc.get_objects())

    objects_after(3)
    # WHEN soak iterations run
    before = objects_after(0)
    after = objects_after(40)
    # THEN the number of live objects stays put (it grew 28 per iteration before: tasks,
    # packets and records), and the fresh functions' names are reused, not interned anew
    assert after - before < 40, (before, after)
    assert target._FRESH_CODE_TEMPLATE.format(i=1, j=2).split("(")[0] == \
        target._FRESH_CODE_TEMPLATE.format(i=9, j=2).split("(")[0]


# -- instruction counts (--clock instructions) ------------------------------------------

COUNTED_PROGRAM = textwrap.dedent("""
    import sys, threading
    from fastattach.bench.target import counted_call

    def work(n):
        total = 0
        for i in range(n):
            total += i * i
        return total

    stop = False
    def spin():   # another thread runs all along: its instructions must not be counted
        while not stop:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    for n in (20_000, 20_000, 40_000):
        counted_call(lambda: work(n))
    stop = True
    spinner.join()
""")


def test_callgrind_counts_each_sample_of_the_main_thread_alone(tmp_path):
    import subprocess
    import sys

    from fastattach.bench.instructions import callgrind_prefix, estimated_cycles, remove_dumps, sample_events

    program = tmp_path / "counted.py"
    program.write_text(COUNTED_PROGRAM)
    dumps = tmp_path / "dumps"
    process = subprocess.run([*callgrind_prefix(str(dumps), sys.executable), sys.executable, str(program)],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    samples = sample_events(str(dumps), _pid_of_dumps(dumps))
    first, second, double = (sample["Ir"] for sample in samples)
    assert first > 100_000
    # The same work counts the same to well under 1%; twice the work about twice as much.
    assert abs(second - first) / first < 0.01
    assert 1.8 < double / first < 2.2
    # The caches and the branch predictor are simulated, and their misses cost cycles.
    assert all({"D1mr", "DLmr", "Bcm", "Bim"} <= set(sample) for sample in samples)
    assert all(estimated_cycles(sample) > sample["Ir"] for sample in samples)
    remove_dumps(str(dumps), _pid_of_dumps(dumps))
    assert not list(dumps.iterdir())


def _pid_of_dumps(directory) -> int:
    (pid,) = {int(path.name.split(".")[1]) for path in directory.iterdir()}
    return pid


def test_callgrind_refuses_a_shell_script_interpreter(tmp_path):
    from fastattach.bench.instructions import CallgrindUnavailable, callgrind_prefix

    shim = tmp_path / "python3.12"
    shim.write_text("#!/bin/sh\nexec python3 \"$@\"\n")
    with pytest.raises(CallgrindUnavailable, match="is a script"):
        callgrind_prefix(str(tmp_path / "dumps"), str(shim))


def test_instruction_counts_pair_like_times():
    runs = [{**run("none", 0.1), "instructions": 1000}, {**run("fastattach", 0.3), "instructions": 1010}]
    assert paired_ratios(runs, measure="instructions") == {("3.12", "w", 4, "fastattach"): [1.01]}

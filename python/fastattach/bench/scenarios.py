"""The measured scenarios and the breakpoints each one sets through DAP."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .lines import BreakpointPlan

DEBUGGERS = ("debugpy", "fastattach")
BASELINE = "none"
REFERENCES = ("bdb", "coverage")
# A false condition that still does real work on every evaluation: a global lookup
# and a comparison, so a constant-folding shortcut cannot make it look free.
FALSE_CONDITION = "__name__ is None"
LOGPOINT_MESSAGE = "fastattach-bench logpoint"

SCENARIOS = {
    1: "listening, no client",
    2: "client attached, no breakpoints",
    3: "breakpoints only in files that never run",
    4: "breakpoint in the hottest function, on a line that never runs",
    5: "false conditional breakpoint on the hottest line",
    6: "logpoint on a line that runs often",
    7: "after the client detaches (fastattach: and stop())",
}
# The references run once per workload and repetition, in a group of their own.
REFERENCE_SCENARIO = "ref"

# Source of the file that holds scenario 3's breakpoints: real code, never imported.
NEVER_RUN_SOURCE = '''"""Never imported: holds the breakpoints of scenario 3."""


def never_called(items):
    total = 0
    for item in items:
        total += item
        if total > 100:
            total -= 100
    return total
'''
NEVER_RUN_LINES = (6, 8, 9)

# The lines the latency and soak runs break on.  They live in a file of their own,
# written next to never_run.py, because a debugger may rightly refuse to stop in its
# own package (where target.py lives).
PROBES_SOURCE = '''"""Written by the benchmark harness: the lines its latency and soak runs break on."""
import time


def latency_probe(stamps):
    stamps.append(time.monotonic())
    return None  # LATENCY_BREAK


def soak_tick(iteration):
    iteration += 1  # SOAK_CONDITION
    return iteration  # SOAK_LOGPOINT
'''


class NotApplicable(LookupError):
    """The workload has no line that fits this scenario (reported, not a failure)."""


@dataclass
class ScenarioSetup:
    """What the harness does through DAP before timing, and what it checks afterwards."""

    connect: bool = True
    breakpoints: dict[str, list[dict]] = field(default_factory=dict)
    detach_before_timing: bool = False
    # Run the workload once before timing (every mode, the baseline too): with a client
    # attached, its code is then instrumented by the time the client detaches, as in a
    # server that was being debugged (on 3.12 that takes superinstructions away: _requicken).
    run_before_timing: bool = False
    expect_logpoint_output: bool = False
    # After timing, a plain breakpoint here must stop the debuggee: proof that the
    # debugger was really watching the code whose speed was measured.
    probe: tuple[str, int] | None = None


@dataclass(frozen=True)
class SupportFiles:
    never_run: str    # scenario 3's breakpoints
    probes: str       # latency and soak breakpoints


def write_support_files(directory: str) -> SupportFiles:
    os.makedirs(directory, exist_ok=True)
    files = SupportFiles(os.path.join(directory, "never_run.py"), os.path.join(directory, "probes.py"))
    for path, source in ((files.never_run, NEVER_RUN_SOURCE), (files.probes, PROBES_SOURCE)):
        with open(path, "w") as out:
            out.write(source)
    return files


def probe_line(tag: str) -> int:
    for number, line in enumerate(PROBES_SOURCE.splitlines(), 1):
        if line.rstrip().endswith("# " + tag):
            return number
    raise LookupError(tag)


def _merge(*pairs: tuple[str, dict]) -> dict[str, list[dict]]:
    merged: dict[str, list[dict]] = {}
    for path, breakpoint in pairs:
        merged.setdefault(path, []).append(breakpoint)
    return merged


def scenario_setup(scenario: int, plan: BreakpointPlan, never_run_file: str) -> ScenarioSetup:
    probe = (plan.hot_file, plan.hottest_line)
    if scenario == 1:
        return ScenarioSetup(connect=False)
    if scenario == 2:
        return ScenarioSetup(probe=probe)
    if scenario == 3:
        return ScenarioSetup(breakpoints={never_run_file: [{"line": n} for n in NEVER_RUN_LINES]}, probe=probe)
    if scenario == 4:
        if plan.never_line is None:
            raise NotApplicable("every line of every function that ran was executed")
        return ScenarioSetup(breakpoints=_merge((plan.never_file, {"line": plan.never_line})), probe=probe)
    if scenario == 5:
        return ScenarioSetup(breakpoints=_merge(
            (plan.hot_file, {"line": plan.hottest_line, "condition": FALSE_CONDITION})), probe=probe)
    if scenario == 6:
        return ScenarioSetup(breakpoints=_merge(
            (plan.logpoint_file, {"line": plan.logpoint_line, "logMessage": LOGPOINT_MESSAGE})),
            expect_logpoint_output=True, probe=probe)
    if scenario == 7:
        # Breakpoints as in scenarios 4 and 5, so whatever a detach leaves behind shows.
        pairs = [(plan.hot_file, {"line": plan.hottest_line, "condition": FALSE_CONDITION})]
        if plan.never_line is not None:
            pairs.append((plan.never_file, {"line": plan.never_line}))
        return ScenarioSetup(breakpoints=_merge(*pairs), detach_before_timing=True, run_before_timing=True)
    raise ValueError(f"no scenario {scenario}")


def reference_breakpoint(plan: BreakpointPlan) -> tuple[str, int, str | None]:
    """(file, line, condition) for the bdb reference: scenario 4's line, else scenario 5's."""
    if plan.never_line is not None:
        return plan.never_file, plan.never_line, None
    return plan.hot_file, plan.hottest_line, FALSE_CONDITION

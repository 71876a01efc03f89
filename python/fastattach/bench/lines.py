"""Automatic choice of breakpoint lines from a line-count profile of one workload unit.

Hand-picked line numbers go stale when a workload changes; these are recomputed
from the code that actually runs, on every Python the harness measures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# A logpoint sends one DAP message per hit, so "a line that runs often" means
# about this many hits per unit of work: often enough to be a real load, rare
# enough that both debuggers finish a sample in seconds, not minutes.
LOGPOINT_HITS_PER_UNIT = 100


class NoSuitableLine(LookupError):
    """The profile has no line that fits a scenario (for example: nothing ran)."""


@dataclass(frozen=True)
class BreakpointPlan:
    hot_file: str
    hot_function: str
    hottest_line: int          # scenario 5: false conditional breakpoint
    hottest_line_hits: int     # per unit: divides a scenario-5 slowdown into a per-evaluation cost
    # Scenario 4: a never-run line in the hottest function that has one.  None when
    # every line of every function that ran was executed (nbody, for example).
    never_file: str | None
    never_function: str | None
    never_line: int | None
    logpoint_file: str
    logpoint_line: int         # scenario 6
    logpoint_hits: int         # per unit

    def to_json(self) -> dict:
        return asdict(self)


def _hotness(entry: dict) -> int:
    return sum(entry["counts"].values())


def _never_run_lines(entry: dict) -> list[int]:
    """Lines of this code object that hold instructions but never ran.

    The ``def`` line is left out: its only instruction is the function's entry,
    which debuggers treat as a call breakpoint.
    """
    ran = {int(line) for line in entry["counts"]}
    return [line for line in entry["lines"] if line > entry["first_line"] and line not in ran]


def choose_lines(profile: list[dict]) -> BreakpointPlan:
    """Picks the scenario lines from ``profile`` (the output of target.count_lines)."""
    ranked = sorted((e for e in profile if e["counts"]), key=_hotness, reverse=True)
    if not ranked:
        raise NoSuitableLine("the workload ran no Python lines outside the harness")
    hot = ranked[0]
    hottest_line, hottest_hits = max(((int(line), n) for line, n in hot["counts"].items()),
                                     key=lambda item: (item[1], -item[0]))

    never = next((e for e in ranked if _never_run_lines(e)), None)
    never_line = None
    if never is not None:
        # The first never-run line after the hottest line keeps the breakpoint inside the
        # hot loop's body where there is one; otherwise the function's first such line.
        candidates = _never_run_lines(never)
        after_hot = [line for line in candidates if never is hot and line > hottest_line]
        never_line = after_hot[0] if after_hot else candidates[0]

    def logpoint_distance(item):
        entry, line, hits = item
        return (abs(math.log(hits) - math.log(LOGPOINT_HITS_PER_UNIT)), -_hotness(entry), line)

    lines_that_ran = [(e, int(line), n) for e in ranked for line, n in e["counts"].items()
                      if int(line) > e["first_line"]]
    if not lines_that_ran:
        lines_that_ran = [(e, int(line), n) for e in ranked for line, n in e["counts"].items()]
    log_entry, log_line, log_hits = min(lines_that_ran, key=logpoint_distance)

    return BreakpointPlan(
        hot_file=hot["file"], hot_function=hot["function"],
        hottest_line=hottest_line, hottest_line_hits=hottest_hits,
        never_file=never and never["file"], never_function=never and never["function"], never_line=never_line,
        logpoint_file=log_entry["file"], logpoint_line=log_line, logpoint_hits=log_hits,
    )


def inner_repeats(unit_seconds: float, sample_seconds: float) -> int:
    """How many units make one timed sample of at least ``sample_seconds``."""
    if unit_seconds <= 0:
        return 1
    return max(1, math.ceil(sample_seconds / unit_seconds))

"""Statistics for side-by-side runs: paired ratios, their median and range.

Every debugger run is compared with the no-debugger run of the same group (same
Python, workload, scenario and repetition, run next to it), so slow drift of a
shared machine cancels out of each ratio instead of piling up in one mode.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    count: int

    def to_json(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.count}


def summarize(values) -> Summary:
    values = list(values)
    if not values:
        raise ValueError("no values to summarize")
    return Summary(statistics.median(values), min(values), max(values), len(values))


def _paired(runs: list[dict], combine, baseline_mode: str, measure: str = "seconds") -> dict[tuple, list[float]]:
    """combine(run, baseline's measure) for each successful run with a successful baseline,
    grouped by (python, workload, scenario, mode); None from combine skips the run."""
    baselines = {
        (r["python"], r["workload"], r["scenario"], r["rep"]): r[measure]
        for r in runs if r["mode"] == baseline_mode and r["ok"]
    }
    paired: dict[tuple, list[float]] = {}
    for r in runs:
        if r["mode"] == baseline_mode or not r["ok"]:
            continue
        base = baselines.get((r["python"], r["workload"], r["scenario"], r["rep"]))
        value = None if base is None else combine(r, base)
        if value is not None:
            paired.setdefault((r["python"], r["workload"], r["scenario"], r["mode"]), []).append(value)
    return paired


def paired_ratios(runs: list[dict], baseline_mode: str = "none", measure: str = "seconds") -> dict[tuple, list[float]]:
    """Ratios of each successful run's time to its group's baseline run's.

    A run is a dict with python, workload, scenario, mode, rep, ok and seconds (the
    run's representative sample time: its fastest sample), or another ``measure``
    (instructions).  The result maps (python, workload, scenario, mode) to one ratio
    per repetition that has both runs; a repetition whose baseline failed contributes
    nothing.
    """
    return _paired(runs, lambda run, base: run[measure] / base if base else None, baseline_mode, measure)


def ratio_summaries(runs: list[dict], measure: str = "seconds") -> dict[str, dict]:
    """paired_ratios summarized for results.json: "python|workload|scenario|mode" ->
    median, min, max and count."""
    return {"|".join(str(part) for part in key): summarize(values).to_json()
            for key, values in paired_ratios(runs, measure=measure).items()}


def paired_differences(runs: list[dict], per_run_divisor, baseline_mode: str = "none") -> dict[tuple, list[float]]:
    """Like paired_ratios, but (seconds - baseline) / per_run_divisor(run): a cost per event."""
    def cost(run, base):
        divisor = per_run_divisor(run)
        return (run["seconds"] - base) / divisor if divisor else None
    return _paired(runs, cost, baseline_mode)


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def linear_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def rotated(modes: tuple[str, ...], repetition: int) -> tuple[str, ...]:
    """The mode order for one repetition: A B C, then B C A, then C A B, ...

    Rotating the order keeps a mode from always running first (cold caches) or
    last (a machine that slowly gets busier).
    """
    shift = repetition % len(modes)
    return modes[shift:] + modes[:shift]

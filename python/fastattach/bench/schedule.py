"""The order of the ratio runs: interleaved, so every debugger run has a baseline beside it."""

from __future__ import annotations

from typing import NamedTuple

from .scenarios import BASELINE, REFERENCE_SCENARIO
from .stats import rotated


class RunKey(NamedTuple):
    rep: int
    python: str
    workload: str
    scenario: object   # a scenario number, or REFERENCE_SCENARIO
    mode: str


def interleave(pythons, workloads, scenarios, modes, references, repeat: int) -> list[RunKey]:
    """A B C A B C ...: for each repetition, Python, workload and scenario, the baseline
    and every mode back to back (order rotated per repetition), then the references."""
    order = []
    groups = [(scenario, (BASELINE, *modes)) for scenario in scenarios]
    if references:
        groups.append((REFERENCE_SCENARIO, (BASELINE, *references)))
    for rep in range(repeat):
        for python in pythons:
            for workload in workloads:
                for scenario, group_modes in groups:
                    order.extend(RunKey(rep, python, workload, scenario, mode) for mode in rotated(group_modes, rep))
    return order

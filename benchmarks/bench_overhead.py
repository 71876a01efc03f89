"""Issue 2's overhead numbers, measured more tightly than the full comparison run.

Runs ``python -m fastattach.bench`` on the scenarios issue 2 sets targets for
(3: breakpoints only in other files, 4: a never-hit breakpoint in the hot function,
5: a false condition on the hot line, 7: after stop()), on the workloads whose
hottest function has a line that never runs, with more interleaved repetitions,
plus the start-up figures (RSS and import time before any client connects).
The targets table in its results.md is the answer; extra arguments are passed on
(for example ``--python .venv/3.13/bin/python`` or ``--repeat 9``).

    python benchmarks/bench_overhead.py [--out DIR] [more python -m fastattach.bench flags]
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ISSUE_2_ARGS = [
    "--scenarios", "3,4,5,7", "--references", "", "--sections", "ratios,startup", "--repeat", "7",
    "--workload", "richards", "--workload", "chaos", "--workload", "json_dumps",
]


def main(argv: list[str]) -> int:
    from fastattach.bench.cli import main as bench_main

    if "--out" not in argv:
        argv = [*argv, "--out", os.path.join(HERE, "out", "overhead")]
    return bench_main([*ISSUE_2_ARGS, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

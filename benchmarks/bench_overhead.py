"""The overhead targets' numbers, measured more tightly than the full comparison run.

Runs ``python -m fastattach.bench`` on the scenarios that have overhead targets
(3: breakpoints only in other files, 4: a never-hit breakpoint in the hot function,
5: a false condition on the hot line, 7: after stop()), on two workloads whose
hottest function has a line that never runs, with 5 interleaved repetitions, plus
the start-up figures (RSS and import time before any client connects).

The answer is written to benchmarks/results/issue2-overhead.md, and RESULTS.md is
rebuilt from the stored full run (RESULTS.json) so that it carries the fragment.
Extra arguments go to the harness (for example ``--python .venv/3.13/bin/python``
or ``--repeat 9``).

    python benchmarks/bench_overhead.py [more python -m fastattach.bench flags]
"""

from __future__ import annotations

import json
import os
import shlex
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FRAGMENT = os.path.join(HERE, "results", "issue2-overhead.md")
ISSUE_2_ARGS = [
    "--scenarios", "3,4,5,7", "--references", "", "--sections", "ratios,startup", "--repeat", "5",
    "--workload", "richards", "--workload", "chaos",
]


def fragment(results: dict, command: str) -> str:
    from fastattach.bench.report import ratio_table, targets_table

    machine = results["machine"]
    return "\n".join([
        f"## Overhead targets, {results['repeat']} interleaved repetitions",
        "",
        f"Command: `{command}` ({results['date']}, {machine['cpu']}, {machine['cores']} cores, "
        f"{results['elapsed_seconds'] / 60:.1f} min).",
        "",
        targets_table(results),
        "",
        ratio_table(results),
        "",
    ])


def main(argv: list[str]) -> int:
    from fastattach.bench import cli

    if "--out" not in argv:
        argv = [*argv, "--out", os.path.join(HERE, "out", "overhead")]
    arguments = [*ISSUE_2_ARGS, *argv]
    status = cli.main(arguments)
    out = argv[argv.index("--out") + 1]
    with open(os.path.join(out, "results.json")) as source:
        results = json.load(source)
    cli.write_fragment_and_republish(
        FRAGMENT, fragment(results, shlex.join(["python", "benchmarks/bench_overhead.py", *sys.argv[1:]])))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What an always-on probe that is never hit costs, and what is left once it is removed, in instructions.

The same counting as benchmarks/bench_instructions.py (valgrind's callgrind, instructions on
the main thread inside each timed sample only, fastattach.bench.instructions), for
fastattach.probes, which needs no client: so the target here is a plain script, not the
harness's DAP session. Per workload, the line is the harness's own choice for a never-hit
breakpoint (fastattach.bench.lines: a never-run line of the hottest function that has one),
found by a line-count profile of one unit. Three modes, each a fresh process under
callgrind with the same hash seed, interleaved over the repetitions:

- none: no probe, fastattach not imported;
- probe: a log probe on that line, set before the warm-up unit;
- removed: the probe set, one unit run, the probe removed (the tool id freed), then sampled.

    python benchmarks/bench_probe_instructions.py [--python PY ...] [--workload NAME ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODES = ("none", "probe", "removed")


def target(mode: str, workload: str, file: str, line: int, samples: int, inner: int) -> None:
    """Runs inside callgrind: the samples of one mode."""
    from fastattach.bench.target import counted_call, load_workload, repeat_unit

    _, unit = load_workload(workload)
    sample = repeat_unit(unit, inner)
    if mode in ("probe", "removed"):
        import fastattach.probes

        probe_id = fastattach.probes.add(file, line, log="never printed {1}")
        unit()
        if mode == "removed":
            fastattach.probes.remove(probe_id)
            assert sys.monitoring.get_tool(4) is None and sys.monitoring.get_tool(3) is None
    else:
        unit()
    for _ in range(samples):
        counted_call(sample)
    if mode == "probe":
        import fastattach.probes

        assert [p["line"] for p in fastattach.probes.list()] == [line], "the probe must still be set"


def choose_line(python: str, workload: str) -> tuple[str, int, float]:
    """(file, never-run line of the hottest function, seconds per unit) from the harness's profile."""
    spec = json.dumps({"kind": "profile", "workload": workload})
    out = subprocess.run([python, "-m", "fastattach.bench.target", spec], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    records = [json.loads(text[2:]) for text in out.stdout.splitlines() if text.startswith("@@")]
    record = next(r for r in records if r["kind"] == "result")
    from fastattach.bench.lines import choose_lines

    plan = choose_lines(record["profile"])
    if plan.never_line is None:
        raise SystemExit(f"{workload}: no never-run line in any function that ran")
    return plan.never_file, plan.never_line, record["unit_seconds"]


def count(python: str, mode: str, workload: str, file: str, line: int, samples: int, inner: int,
          seed: int) -> list[int]:
    from fastattach.bench.instructions import callgrind_prefix, remove_dumps, sample_events

    out_dir = tempfile.mkdtemp(prefix="fastattach-probe-instructions-")
    command = [*callgrind_prefix(out_dir, python), python, os.path.abspath(__file__), "--target", mode, workload,
               file, str(line), str(samples), str(inner)]
    process = subprocess.run(command, env=dict(os.environ, PYTHONHASHSEED=str(seed)), cwd=ROOT,
                             capture_output=True, text=True)
    if process.returncode:
        raise RuntimeError(f"{mode} {workload}: exit {process.returncode}: {process.stderr[-2000:]}")
    events = sample_events(out_dir, _pid(out_dir))
    remove_dumps(out_dir, _pid(out_dir))
    os.rmdir(out_dir)
    return [e["Ir"] for e in events]


def _pid(out_dir: str) -> int:
    return int(next(name for name in os.listdir(out_dir) if name.startswith("callgrind.")).split(".")[1])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--target":
        mode, workload, file, line, samples, inner = argv[1:7]
        target(mode, workload, file, int(line), int(samples), int(inner))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="interpreter (default: .venv/3.12 and .venv/3.13)")
    parser.add_argument("--workload", action="append", help="default: richards")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args(argv)
    pythons = args.python or [os.path.join(ROOT, ".venv", v, "bin", "python") for v in ("3.12", "3.13")]
    workloads = args.workload or ["richards"]
    print("| Python | workload | line | probe / none | removed / none | spread of none's samples |")
    print("|---|---|---|---|---|---|")
    for python in pythons:
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        for workload in workloads:
            file, line, unit_seconds = choose_line(python, workload)
            inner = max(1, round(0.05 / unit_seconds))   # ~50 ms of native time per sample
            ratios: dict[str, list[float]] = {"probe": [], "removed": []}
            spread = 0.0
            for rep in range(args.repeat):
                counts = {mode: count(python, mode, workload, file, line, args.samples, inner, seed=rep)
                          for mode in MODES}
                base = statistics.median(counts["none"])
                spread = max(spread, max(counts["none"]) / min(counts["none"]) - 1)
                for mode in ("probe", "removed"):
                    ratios[mode].append(statistics.median(counts[mode]) / base)

            def cell(values):
                return f"{statistics.median(values):.4f}x ({min(values):.4f}-{max(values):.4f})"
            print(f"| {version} | {workload} | {os.path.basename(file)}:{line} | {cell(ratios['probe'])} | "
                  f"{cell(ratios['removed'])} | {spread * 100:.3f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

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
- removed: the probe set, one unit run, the probe removed (the tool id freed), then sampled;
- active-paced (with --active): a log probe on the harness's logpoint line (the line run
  closest to 10 times per unit), which logs on every hit within its default budget
  (50 messages/s, 1% of a core), to a logging handler on os.devnull;
- active-hot (with --active): a log probe on the hottest line; its budget pauses it during
  the warm-up unit, so the samples show a tripped probe (under callgrind the program runs
  ~50x slower, so the 30 s cool-down may end and the probe log one more burst).

    python benchmarks/bench_probe_instructions.py [--python PY ...] [--workload NAME ...] [--repeat N] [--active]
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
ACTIVE_MODES = ("active-paced", "active-hot")


def target(mode: str, workload: str, file: str, line: int, samples: int, inner: int) -> None:
    """Runs inside callgrind: the samples of one mode."""
    from fastattach.bench.target import counted_call, load_workload, repeat_unit

    _, unit = load_workload(workload)
    sample = repeat_unit(unit, inner)
    if mode in ACTIVE_MODES:
        import logging

        import fastattach.probes

        probe_log = logging.getLogger("fastattach.probe")
        probe_log.addHandler(logging.FileHandler(os.devnull))
        probe_log.setLevel(logging.INFO)
        probe_log.propagate = False
        fastattach.probes.add(file, line, log="hit at " + str(line))
        unit()
    elif mode in ("probe", "removed"):
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


def choose_line(python: str, workload: str) -> tuple[str, int, float, dict]:
    """(file, never-run line of the hottest function, seconds per unit, the whole plan) from the
    harness's profile."""
    spec = json.dumps({"kind": "profile", "workload": workload})
    out = subprocess.run([python, "-m", "fastattach.bench.target", spec], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    records = [json.loads(text[2:]) for text in out.stdout.splitlines() if text.startswith("@@")]
    record = next(r for r in records if r["kind"] == "result")
    from fastattach.bench.lines import choose_lines

    plan = choose_lines(record["profile"])
    if plan.never_line is None:
        raise SystemExit(f"{workload}: no never-run line in any function that ran")
    return plan.never_file, plan.never_line, record["unit_seconds"], plan.to_json()


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
    parser.add_argument("--active", action="store_true", help="also the active-paced and active-hot modes")
    args = parser.parse_args(argv)
    active = ACTIVE_MODES if args.active else ()
    pythons = args.python or [os.path.join(ROOT, ".venv", v, "bin", "python") for v in ("3.12", "3.13")]
    workloads = args.workload or ["richards"]
    extra = "".join(f" {mode} / none |" for mode in active)
    print(f"| Python | workload | line | probe / none | removed / none |{extra} spread of none's samples |")
    print("|---|---|---|---|---|" + "---|" * len(active) + "---|")
    for python in pythons:
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        for workload in workloads:
            file, line, unit_seconds, plan = choose_line(python, workload)
            inner = max(1, round(0.05 / unit_seconds))   # ~50 ms of native time per sample
            where = {"active-paced": (plan["logpoint_file"], plan["logpoint_line"]),
                     "active-hot": (plan["hot_file"], plan["hottest_line"])}
            ratios: dict[str, list[float]] = {mode: [] for mode in ("probe", "removed", *active)}
            spread = 0.0
            for rep in range(args.repeat):
                counts = {mode: count(python, mode, workload, *where.get(mode, (file, line)), args.samples, inner,
                                      seed=rep)
                          for mode in (*MODES, *active)}
                base = statistics.median(counts["none"])
                spread = max(spread, max(counts["none"]) / min(counts["none"]) - 1)
                for mode in ratios:
                    ratios[mode].append(statistics.median(counts[mode]) / base)

            def cell(values):
                return f"{statistics.median(values):.4f}x ({min(values):.4f}-{max(values):.4f})"
            active_cells = "".join(f" {cell(ratios[mode])} |" for mode in active)
            print(f"| {version} | {workload} | {os.path.basename(file)}:{line} | {cell(ratios['probe'])} | "
                  f"{cell(ratios['removed'])} |{active_cells} {spread * 100:.3f}% |", flush=True)
            if active:
                print(f"  (active-paced at {os.path.basename(plan['logpoint_file'])}:{plan['logpoint_line']}, "
                      f"{plan['logpoint_hits']} hits per unit; active-hot at "
                      f"{os.path.basename(plan['hot_file'])}:{plan['hottest_line']}, {plan['hottest_line_hits']} hits "
                      f"per unit; {inner} units per sample)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

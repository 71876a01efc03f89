"""What an always-on probe costs a hot function, timed: no probe, a never-hit probe, and
active log probes under their default budgets, side by side.

Each scenario is a fresh process running the same function (one hot line per iteration,
~50 ms a round); the time per iteration is measured inside the process with
perf_counter_ns over --rounds rounds, after a warm-up round. Probe output goes through the
``fastattach.probe`` logger to a real handler (a file handler on os.devnull), so each
record is formatted and written. Scenarios run interleaved (A B C D, A B C D, ...) for
--reps repetitions; the report gives each scenario's median time per iteration, its ratio
to the no-probe run of the same repetition (median and range over repetitions), and what
the probe's budget did.

    .venv/3.12/bin/python benchmarks/bench_probe_overhead.py [--reps 5] [--rounds 20] [--json out.json]

Scenarios:
  none         no probe; fastattach.probes not imported
  never        a log probe on a line of the hot function that never runs
  active-paced a log probe on a line run once per round (~20 times a second): every hit logs,
               well within the default budget (50 messages/s, 20 KB/s, 1% of a core)
  active-hot   a log probe on the hot line itself (millions of hits a second): its budget
               pauses it within its first second (output rate, then 30 s cool-down, during
               which the line is DISABLEd); measured rounds come after the warm-up round, so
               this is the cost under a tripped budget, and the warm-up round's time is
               reported apart as the cost of the burst before the trip
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = ("none", "never", "active-paced", "active-hot")

TARGET = '''
import json, logging, os, sys, time

def hot(n):
    total = 0
    for i in range(n):
        total += i  # HOT
        if i < 0:
            total = -1  # NEVER
    return total

def main():
    scenario, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    handler = logging.FileHandler(os.devnull)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    probe_log = logging.getLogger("fastattach.probe")
    probe_log.addHandler(handler)
    probe_log.setLevel(logging.INFO)
    probe_log.propagate = False
    records = []
    handler.addFilter(lambda record: records.append(1) or True)
    lines = {name: k for k, text in enumerate(open(__file__).read().splitlines(), 1)
             for name in ("HOT", "NEVER", "ROUND") if text.rstrip().endswith("# " + name)}
    if scenario != "none":
        import fastattach.probes
        line = {"never": lines["NEVER"], "active-paced": lines["ROUND"], "active-hot": lines["HOT"]}[scenario]
        fastattach.probes.add(__file__, line, log="i={i} total={total}" if scenario == "active-hot" else
                              "round {r} done")
    t0 = time.perf_counter_ns()
    hot(n)                                      # warm-up; trips active-hot's budget
    warm = (time.perf_counter_ns() - t0) / n
    results = []
    for r in range(rounds):
        t0 = time.perf_counter_ns()
        hot(n)
        results.append((time.perf_counter_ns() - t0) / n)
        r = r  # ROUND
    budget = None
    if scenario != "none":
        from fastattach import _api
        engine = _api.session().probe_engine()
        budgets = engine.budgets.budgets() if engine.budgets is not None else []
        if budgets:
            b = budgets[0]
            budget = dict(b.stats(), paused=b.paused, reason=b.reason)
    print("RESULT " + json.dumps({"per_iteration_ns": results, "warm_up_ns": warm, "records": len(records),
                                  "budget": budget}), flush=True)

main()
'''


def run(python: str, script: Path, scenario: str, n: int, rounds: int) -> dict:
    out = subprocess.run([python, str(script), scenario, str(n), str(rounds)], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for text in out.stdout.splitlines():
        if text.startswith("RESULT "):
            return json.loads(text[7:])
    raise RuntimeError(f"{scenario}: no RESULT (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--n", type=int, default=1_000_000, help="iterations per round")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", help="write every measurement here")
    options = parser.parse_args(argv)
    names = options.scenarios.split(",")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="fastattach-probe-overhead-") as tmp:
        script = Path(tmp) / "probe_overhead_target.py"
        script.write_text(TARGET)
        for rep in range(options.reps):
            for name in names:   # interleaved: A B C D, A B C D
                result = run(options.python, script, name, options.n, options.rounds)
                runs[name].append(result)
                print(f"rep {rep + 1}/{options.reps} {name:13s} {statistics.median(result['per_iteration_ns']):6.2f} "
                      f"ns/iteration  records {result['records']}", file=sys.stderr, flush=True)
    version = subprocess.run([options.python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"python {version}, {options.reps} interleaved repetitions of {options.rounds} rounds x {options.n} "
          f"iterations, one fresh process per run; median [min-max] over repetitions")
    print("| scenario | ns per iteration | ratio to none (same repetition) | warm-up round, ns per iteration | "
          "probe records per run | budget |")
    print("|---|---|---|---|---|---|")
    base = [statistics.median(r["per_iteration_ns"]) for r in runs.get("none", [])]

    def span(values, fmt):
        return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"

    for name in names:
        medians = [statistics.median(r["per_iteration_ns"]) for r in runs[name]]
        ratios = [m / b for m, b in zip(medians, base)] if base else []
        budgets = [r["budget"] for r in runs[name] if r["budget"]]
        paused = sorted({b["reason"] for b in budgets if b["paused"]})
        budget = (f"paused ({', '.join(paused)}) in {sum(b['paused'] for b in budgets)}/{len(budgets)}" if paused
                  else ("armed" if budgets else "-"))
        print(f"| {name} | {span(medians, '.2f')} | {span(ratios, '.4f') + 'x' if ratios else '-'} | "
              f"{span([r['warm_up_ns'] for r in runs[name]], '.2f')} | "
              f"{span([r['records'] for r in runs[name]], 'd')} | {budget} |")
    if options.json:
        Path(options.json).write_text(json.dumps({"python": version, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

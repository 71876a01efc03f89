"""What a runaway logpoint costs before and after its budget trips, and what a snapshot costs.

Each scenario is a fresh debuggee process running the same hot loop (one breakpoint line
executed every iteration); the loop's time per iteration is measured inside the process
with perf_counter_ns over several rounds, after a warm-up that also trips the budget.
Scenarios run interleaved (A B C ... A B C ...) for --reps repetitions; the report gives
the median and range over repetitions, and each scenario's ratio to the no-debugger run
of the same repetition.

    .venv/3.12/bin/python benchmarks/bench_budget.py --reps 5 [--json out.json]

Scenarios:
  nodebug          plain python, no debugger
  attached         fastattach, client attached, no breakpoint
  logpoint-tripped fastattach, logpoint "i={i}" on the hot line, default budget (50 msg/s):
                   measured after the budget tripped (the paused line is DISABLEd)
  logpoint-unbudgeted  the same logpoint with every budget off (0 = unlimited): what each hit
                   costs before a budget trips (and forever, without budgets)
  snapshot         --production, breakpoint on the hot line, snapshots unlimited: each
                   iteration takes one snapshot (stack + locals of 3 frames, <= 32 KB)
  debugpy-logpoint unmodified debugpy with the same logpoint (no budget: this cost stays)

With --rare-catch it measures the budget policy instead (docs/production.md, "The budget
policy"): a conditional breakpoint whose condition holds once, on a line the program runs
--rates times a second (400000 by default) for --seconds, outside production mode.

    .venv/3.12/bin/python benchmarks/bench_budget.py --rare-catch --reps 3 [--rates 400000,100000]

  nodebug          the line's rate without a debugger (the pacing work is calibrated to it)
  old-policy       the budgets before issue 14: 5000 evaluations/s, 1% of a core
  general-path     today's defaults, with C evaluating the condition the general way only
                   (eval with the frame's globals and locals), as before engine/conditions.py
  default          today's defaults: no count cap on a condition C evaluates, 10% of a core;
                   C computes the condition as a function of the frame's variables
For each it reports whether the breakpoint paused (and why), whether the true case stopped,
the line's rate while armed, and what C measured per evaluation and as a share of a core.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

from fastattach.net.client import DAPClient  # noqa: E402

TARGET = '''
import json, os, sys, time

def hot(n, payload):
    request = {"id": 7, "user": "alice", "items": list(range(20))}
    total = 0
    for i in range(n):
        total += i  # HOT
    return total

def main():
    n, rounds, warm = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    payload = {"blob": "x" * 10_000, "numbers": list(range(1000))}
    hot(warm, payload)                          # warms up, and trips a budget if there is one
    time.sleep(float(os.environ.get("BENCH_SETTLE", "0.3")))
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        hot(n, payload)
        results.append((time.perf_counter_ns() - t0) / n)
    print("RESULT " + json.dumps(results), flush=True)
    if os.environ.get("BENCH_LINGER"):
        time.sleep(60)

main()
'''

# name: (server flags or None for no debugger, breakpoint kind, iterations per round, warm-up iterations)
SCENARIOS = {
    "nodebug": (None, None, 2_000_000, 200_000),
    "attached": ([], None, 2_000_000, 200_000),
    "logpoint-tripped": ([], "logpoint", 2_000_000, 200_000),
    "logpoint-unbudgeted": (["--logpoint-rate", "0", "--logpoint-bytes", "0", "--condition-cpu", "0"],
                            "logpoint", 5_000, 500),
    "snapshot": (["--production", "--snapshot-rate", "0", "--probe-cpu", "0"], "breakpoint", 300, 30),
    # Unmodified debugpy 1.8.22 with the same logpoint: it has no budget, so this is what
    # every iteration costs for as long as the logpoint is set.
    "debugpy-logpoint": (["<debugpy>"], "logpoint", 5_000, 500),
}


def hot_line(script: str) -> int:
    return next(n for n, text in enumerate(script.splitlines(), 1) if text.rstrip().endswith("# HOT"))


def run_one(name: str, script: Path, rounds: int, timeout: float = 300.0) -> dict:
    flags, kind, n, warm = SCENARIOS[name]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    args = [str(script), str(n), str(rounds), str(warm)]
    if flags is None:
        out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)
        return {"per_iter_ns": _result(out.stdout, out.stderr)}
    env["BENCH_LINGER"] = "1"
    debugpy_port = None
    if flags == ["<debugpy>"]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            debugpy_port = s.getsockname()[1]
        argv = [sys.executable, "-Xfrozen_modules=off", "-m", "debugpy", "--listen", f"127.0.0.1:{debugpy_port}",
                "--wait-for-client", *args]
    else:
        argv = [sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                "--wait-for-client", *flags, *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, text=True)
        client = None
        try:
            deadline = time.monotonic() + 30
            while debugpy_port is None:
                err.seek(0)
                match = re.search(r"listening on (\S+):(\d+)", err.read())
                if match:
                    address = match.group(1), int(match.group(2))
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{name}: the debuggee did not listen")
                time.sleep(0.02)
            else:
                address = "127.0.0.1", debugpy_port
            client = DAPClient.connect(*address, timeout=30)
            breakpoints = {}
            if kind == "logpoint":
                breakpoints = {str(script): [{"line": hot_line(TARGET), "logMessage": "i={i}"}]}
            elif kind == "breakpoint":
                breakpoints = {str(script): [{"line": hot_line(TARGET)}]}
            client.attach(breakpoints=breakpoints)
            deadline = time.monotonic() + timeout
            paused = False
            while True:
                out.seek(0)
                text = out.read()
                # Drain as we go, so the client's memory stays flat.
                paused |= any(e["event"] == "breakpoint" and not e["body"]["breakpoint"]["verified"]
                              for e in client.events())
                if "RESULT " in text:
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{name}: no result")
                time.sleep(0.05)
            return {"per_iter_ns": _result(text, ""), "budget_tripped": paused}
        finally:
            if client is not None:
                client.close()
            try:
                children = psutil.Process(process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            if debugpy_port is not None:
                # debugpy's adapter detaches (its parent is init): find it by its listening socket.
                for connection in psutil.net_connections(kind="tcp"):
                    if (connection.status == psutil.CONN_LISTEN and connection.laddr.port == debugpy_port
                            and connection.pid not in (None, process.pid)):
                        try:
                            children.append(psutil.Process(connection.pid))
                        except psutil.NoSuchProcess:
                            pass
            process.kill()
            process.wait(10)
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass


def _result(stdout: str, stderr: str) -> list[float]:
    match = re.search(r"^RESULT (.*)$", stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no RESULT line:\n{stdout}\n{stderr}")
    return json.loads(match.group(1))


def capture_cost(batches: int = 5, per_batch: int = 500) -> list[float]:
    """In this process: µs per engine.production.capture() of a frame like the target's, default limits,
    without any DAP or logging (the rest of a snapshot's cost is sending it)."""
    from fastattach import _options
    from fastattach.engine import production as _production

    o = _options.DEFAULTS

    def hot(n, payload):
        request = {"id": 7, "user": "alice", "items": list(range(20))}
        total = n
        frame = sys._getframe()
        results = []
        for _ in range(batches):
            t0 = time.perf_counter_ns()
            for _ in range(per_batch):
                _production.capture(frame, breakpoint_id=1, file=__file__, line=1, max_bytes=o["snapshot_max_bytes"],
                                    frames=o["snapshot_frames"], depth=o["snapshot_stack_depth"],
                                    repr_chars=o["snapshot_repr_chars"])
            results.append((time.perf_counter_ns() - t0) / per_batch / 1000)
        del request, total
        return results

    return hot(0, {"blob": "x" * 10_000, "numbers": list(range(1000))})


RARE_TARGET = '''
import json, os, sys, time

if os.environ.get("BENCH_CONDITION_PATH") == "general":
    # The general path alone (eval with the frame's globals and locals), for comparison:
    # no condition becomes a function of the frame's variables (engine/conditions.py).
    import fastattach.engine.conditions
    from fastattach import _fasttrace
    _fasttrace.set_condition_compiler(None)

def per_iteration(size, n=20_000):
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            sum(range(size))
            found = i
        best = min(best, (time.perf_counter() - t0) / n)
    return best

def calibrate(rate):
    """The size of the C work (no line events) that makes one iteration take 1/rate s."""
    per_iteration(10)   # warm up
    base, slope = per_iteration(0), (per_iteration(400) - per_iteration(0)) / 400
    return max(0, round((1 / rate - base) / slope))

def rare(n, size):
    found = None
    for i in range(n):
        sum(range(size))
        found = i  # RARE
    return found

def main():
    rate, seconds = float(sys.argv[1]), float(sys.argv[2])
    size = calibrate(rate)
    n = int(rate * seconds)
    t0 = time.perf_counter()
    found = rare(n, size)
    elapsed = time.perf_counter() - t0
    print("RESULT " + json.dumps({"n": n, "found": found, "seconds": elapsed, "size": size,
                                  "budget": budget_stats()}), flush=True)

def budget_stats():
    """The conditional breakpoint's budget (None without fastattach, or once it is gone)."""
    if "fastattach" not in sys.modules:
        return None
    from fastattach import _api
    gate = _api.session().gate
    budgets = gate.budgets.budgets() if gate is not None else []
    if not budgets:
        return None
    return dict(budgets[0].stats(), limits=budgets[0].limits, paused=budgets[0].paused, reason=budgets[0].reason,
                condition_fast=gate.tracer.stats()["condition_fast"])

main()
'''

RARE_SCENARIOS = {
    "nodebug": None,
    "old-policy": ["--condition-rate", "5000", "--pydevd-condition-rate", "5000", "--condition-cpu", "0.01"],
    "general-path": [],
    "default": [],
}
# Environment of a scenario's debuggee, beyond the common one.
RARE_ENV = {"general-path": {"BENCH_CONDITION_PATH": "general"}}


def run_rare(name: str, script: Path, rate: float, seconds: float, timeout: float = 120.0) -> dict:
    """One process: the conditional breakpoint on the RARE line, `i == n - 1`, outside production mode."""
    flags = RARE_SCENARIOS[name]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYDEVD_DISABLE_FILE_VALIDATION="1", **RARE_ENV.get(name, {}))
    args = [str(script), str(rate), str(seconds)]
    if flags is None:
        out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)
        return _rare_result(out.stdout, out.stderr)
    argv = [sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
            "--wait-for-client", "--budget-cooldown", "600", *flags, *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, text=True)
        client = None
        try:
            deadline = time.monotonic() + 30
            while not (match := re.search(r"listening on (\S+):(\d+)", (err.seek(0), err.read())[1])):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{name}: the debuggee did not listen")
                time.sleep(0.02)
            client = DAPClient.connect(match.group(1), int(match.group(2)), timeout=30)
            n = int(rate * seconds)
            line = next(k for k, text in enumerate(RARE_TARGET.splitlines(), 1) if text.rstrip().endswith("# RARE"))
            client.attach(breakpoints={str(script): [{"line": line, "condition": f"i == {n - 1}"}]})
            stopped_at = at_stop = None
            deadline = time.monotonic() + timeout
            while "RESULT " not in (out.seek(0), out.read())[1]:
                for event in client.events("stopped"):
                    thread = event["body"]["threadId"]
                    frame = client.top_frame(thread)
                    stopped_at = int(client.evaluate("i", frame["id"]))
                    at_stop = ast.literal_eval(client.evaluate("__import__('json').dumps(budget_stats())", frame["id"]))
                    client.set_breakpoints(str(script), [])
                    client.request("continue", {"threadId": thread})
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{name}: no result:\n{(err.seek(0), err.read())[1][-2000:]}")
                time.sleep(0.02)
            out.seek(0)
            result = _rare_result(out.read(), "")
            result["stopped_at"] = stopped_at
            if at_stop is not None:
                result["budget"] = json.loads(at_stop)   # at the stop: later the breakpoint is gone
            return result
        finally:
            if client is not None:
                client.close()
            process.kill()
            process.wait(10)


def _rare_result(stdout: str, stderr: str) -> dict:
    match = re.search(r"^RESULT (.*)$", stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no RESULT line:\n{stdout}\n{stderr}")
    return json.loads(match.group(1))


def rare_catch(options) -> int:
    rates = [float(r) for r in options.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench_rare_target.py"
        script.write_text(RARE_TARGET)
        runs = {(rate, name): [] for rate in rates for name in RARE_SCENARIOS}
        for rep in range(options.reps):
            for rate in rates:
                for name in RARE_SCENARIOS:   # interleaved: A B C A B C
                    result = run_rare(name, script, rate, options.seconds)
                    runs[rate, name].append(result)
                    budget = result.get("budget") or {}
                    line_rate = result["n"] / result["seconds"]
                    print(f"rep {rep + 1}/{options.reps} {rate:9.0f}/s {name:11s} line {line_rate:9.0f}/s"
                          f"  stopped at {result.get('stopped_at')}  paused: {budget.get('reason')}",
                          file=sys.stderr, flush=True)
    print(f"python {sys.version.split()[0]}, {options.reps} interleaved repetitions; a condition `i == n - 1` on a "
          f"line run for {options.seconds:g} s at the given rate, outside production mode; median [min-max]")
    print(f"{'rate':>9s} {'scenario':11s} {'stopped':>8s} {'paused (reason)':>18s} {'line rate /s':>26s} "
          f"{'ns per evaluation':>24s} {'share of a core':>22s}")
    for (rate, name), results in runs.items():
        line_rates = [r["n"] / r["seconds"] for r in results]
        stopped = sum(r.get("stopped_at") == r["n"] - 1 for r in results)
        budgets = [r["budget"] for r in results if r.get("budget") and "time_ns" in r["budget"]]
        paused = [b["reason"] for b in budgets if b["paused"]]
        cost = [b["time_ns"] / b["evaluations"] for b in budgets if b["evaluations"]]
        share = [b["time_ns"] / 1e9 / r["seconds"] for r, b in zip(results, budgets)
                 if b["evaluations"] and not b["paused"]]

        def span(values, fmt):
            if not values:
                return "-"
            return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"

        print(f"{rate:9.0f} {name:11s} {stopped:>3d}/{len(results):<4d} "
              f"{(f'{len(paused)} ({",".join(sorted(set(paused)))})' if paused else '0'):>18s} "
              f"{span(line_rates, '.0f'):>26s} {span(cost, '.0f'):>24s} "
              f"{span([100 * x for x in share], '.1f') + ' %' if share else '-':>22s}")
    if options.json:
        Path(options.json).write_text(json.dumps({"python": sys.version, "rare_catch": [
            {"rate": rate, "scenario": name, "runs": results} for (rate, name), results in runs.items()]}, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds inside each process")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--rare-catch", action="store_true", help="measure the budget policy (see above)")
    parser.add_argument("--rates", default="400000", help="--rare-catch: line rates per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=2.0, help="--rare-catch: how long the line runs")
    options = parser.parse_args(argv)
    if options.rare_catch:
        return rare_catch(options)
    names = options.scenarios.split(",")
    if "nodebug" not in names:
        names.insert(0, "nodebug")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench_budget_target.py"
        script.write_text(TARGET)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for rep in range(options.reps):
            for name in names:   # interleaved: A B C ... then again
                result = run_one(name, script, options.rounds)
                result["median_ns"] = statistics.median(result["per_iter_ns"])
                result["best_ns"] = min(result["per_iter_ns"])
                runs[name].append(result)
                print(f"rep {rep + 1}/{options.reps} {name:22s} {result['median_ns']:12.1f} ns/iteration"
                      + (f"  budget tripped: {result['budget_tripped']}" if "budget_tripped" in result else ""),
                      file=sys.stderr, flush=True)
    print(f"python {sys.version.split()[0]}, {options.reps} interleaved repetitions x {options.rounds} rounds; "
          f"ns per loop iteration, median [min-max] over repetitions; ratio to nodebug of the same repetition")
    for key, what in (("median_ns", "median of rounds"), ("best_ns", "best of rounds (less sensitive to other load)")):
        print(f"-- per process: {what}")
        print(f"{'scenario':22s} {'ns/iteration':>28s} {'x nodebug':>24s}")
        base = [r[key] for r in runs["nodebug"]]
        for name in names:
            values = [r[key] for r in runs[name]]
            ratios = [v / b for v, b in zip(values, base)]
            print(f"{name:22s} {statistics.median(values):12.1f} [{min(values):.1f}-{max(values):.1f}]"
                  f" {statistics.median(ratios):10.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
    capture = capture_cost()
    print(f"capture() alone, in-process, default limits: {statistics.median(capture):.1f} us "
          f"[{min(capture):.1f}-{max(capture):.1f}] per snapshot (median [min-max] of 5 batches of 500)")
    if options.json:
        Path(options.json).write_text(json.dumps({"python": sys.version, "runs": runs, "capture_us": capture},
                                                 indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

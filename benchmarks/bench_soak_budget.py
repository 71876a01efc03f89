"""Soak: a production-mode debuggee under load with budgeted probes, RSS sampled throughout.

The debuggee runs `python -m fastattach --production` with worker threads serving fake
requests as fast as they can.  A real DAP client attaches and sets, on the request
handler: a snapshot breakpoint (1/s), a logpoint (50 msg/s budget, so it trips), and a
conditional breakpoint; with a short cool-down they trip and resume again and again, and
with a short expiry they expire.  Every --reset seconds the client sets the breakpoints
again (new budgets, old ones freed).  RSS of the debuggee is sampled every --interval
seconds; the report gives the curve and the growth after the warm-up.

    .venv/3.12/bin/python benchmarks/bench_soak_budget.py --duration 600 --json soak.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
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
import os, sys, threading, time

served = [0] * 8

def handle(worker, request_id, payload):
    user = payload["users"][request_id % len(payload["users"])]
    items = [request_id * k for k in range(16)]
    total = sum(items)  # SNAP
    label = f"{user}:{total}"  # LOG
    if total % 3 == 0:
        total += 1  # COND
    return len(label) + total

def worker(index, stop):
    payload = {"users": ["alice", "bob", "carol", "dave"], "blob": "x" * 5000}
    i = 0
    while not stop.is_set():
        handle(index, i, payload)
        i += 1
        served[index] = i
        if i % 2000 == 0:
            time.sleep(0.001)   # let the relay and the supervisor run

def main():
    threads = int(sys.argv[1])
    stop = threading.Event()
    for k in range(threads):
        threading.Thread(target=worker, args=(k, stop), name=f"worker-{k}", daemon=True).start()
    trace_to = os.environ.get("SOAK_TRACEMALLOC")   # diagnosis: where does memory grow?
    baseline, started = None, time.monotonic()
    while True:
        time.sleep(1)
        print("served", sum(served), flush=True)
        if trace_to and not baseline and time.monotonic() - started >= 30:
            import tracemalloc
            if not tracemalloc.is_tracing():
                tracemalloc.start(10)
        if trace_to and time.monotonic() - started >= 90 and int(time.monotonic() - started) % 60 == 30:
            import gc
            gc.collect()
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            if baseline is None:
                baseline = snapshot
                continue
            with open(trace_to, "w") as out:
                out.write(f"after {time.monotonic() - started:.0f} s, traced {tracemalloc.get_traced_memory()}\\n")
                for stat in snapshot.compare_to(baseline, "traceback")[:12]:
                    out.write(f"{stat}\\n")
                    for line in stat.traceback.format()[-12:]:
                        out.write(f"    {line}\\n")

main()
'''


def name_machine_paths_generically(trace: Path, tmp: Path) -> None:
    """The tracemalloc report names files as this machine has them: the checkout, the
    interpreter's library and the temporary folder become relative, <python> and <tmp>."""
    from fastattach.bench.cli import REPO_ROOT, relative_paths

    text = trace.read_text().replace(str(tmp) + os.sep, "<tmp>/")
    trace.write_text(relative_paths(text, REPO_ROOT))


def marker(name: str) -> int:
    return next(n for n, text in enumerate(TARGET.splitlines(), 1) if text.rstrip().endswith(f"# {name}"))


def breakpoints(generation: int) -> list[dict]:
    return [
        {"line": marker("SNAP")},
        {"line": marker("LOG"), "logMessage": f"gen {generation} user={{user}} total={{total}}"},
        {"line": marker("COND"), "condition": "total % 1000 == 1"},
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (the documented run: 600)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline RSS")
    parser.add_argument("--reset", type=float, default=60.0, help="seconds between setBreakpoints (expiry is 45 s)")
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--json", help="write the samples here")
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "soak_target.py"
        script.write_text(TARGET)
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
        argv = [sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                "--wait-for-client", "--production", "--budget-cooldown", "2", "--probe-expiry", "45",
                str(script), str(options.threads)]
        out_path, err_path = Path(tmp) / "out.txt", Path(tmp) / "err.txt"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        client = None
        samples = []
        counts: collections.Counter = collections.Counter()
        try:
            deadline = time.monotonic() + 30
            while not (match := re.search(r"listening on (\S+):(\d+)", err_path.read_text())):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the debuggee did not listen:\n" + err_path.read_text())
                time.sleep(0.05)
            client = DAPClient.connect(match.group(1), int(match.group(2)))
            generation = 0
            client.attach(breakpoints={str(script): breakpoints(generation)})
            target = psutil.Process(process.pid)
            start = time.monotonic()
            next_sample = start
            next_reset = start + options.reset
            while (now := time.monotonic()) < start + options.duration:
                if process.poll() is not None:
                    raise RuntimeError(f"the debuggee exited with {process.returncode}")
                for event in client.events():
                    name = event["event"]
                    if name == "output":
                        text = event["body"]["output"]
                        name = ("output:logpoint" if text.startswith("gen ") else
                                "output:snapshot" if text.startswith("fastattach snapshot") else
                                "output:paused" if "paused:" in text else
                                "output:resumed" if "resumed after" in text else
                                "output:expired" if "expired after" in text else "output:other")
                    counts[name] += 1
                if now >= next_reset:
                    generation += 1
                    client.set_breakpoints(str(script), breakpoints(generation))
                    next_reset += options.reset
                if now >= next_sample:
                    served = re.findall(r"served (\d+)", out_path.read_text()[-200:])
                    sample = {"t": round(now - start, 1), "rss_mb": round(target.memory_info().rss / 2**20, 2),
                              "served": int(served[-1]) if served else 0, "events": dict(counts)}
                    samples.append(sample)
                    print(f"t={sample['t']:7.1f}s rss={sample['rss_mb']:8.2f} MB served={sample['served']:>12} "
                          f"snapshots={counts['fastattach.snapshot']} logs={counts['output:logpoint']} "
                          f"pauses={counts['output:paused']} resumes={counts['output:resumed']} "
                          f"expiries={counts['output:expired']}", file=sys.stderr, flush=True)
                    next_sample += options.interval
                time.sleep(0.05)
            alive = process.poll() is None
        except Exception:
            print("--- debuggee stderr (tail) ---\n" + err_path.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            if client is not None:
                client.close()
            process.kill()
            process.wait(10)

        trace = os.environ.get("SOAK_TRACEMALLOC")
        if trace and os.path.exists(trace):
            name_machine_paths_generically(Path(trace), Path(tmp))

    base = [s for s in samples if s["t"] >= options.warmup] or samples
    ts = [s["t"] for s in base]
    rss = [s["rss_mb"] for s in base]
    slope = statistics.linear_regression(ts, rss).slope * 60 if len(base) > 2 else float("nan")
    summary = {
        "python": sys.version.split()[0], "duration_s": options.duration, "threads": options.threads,
        "debuggee_alive_at_end": alive,
        "rss_mb_first_sample": samples[0]["rss_mb"] if samples else None,
        "rss_mb_after_warmup": rss[0] if rss else None, "rss_mb_end": rss[-1] if rss else None,
        "rss_mb_max_after_warmup": max(rss) if rss else None, "rss_mb_min_after_warmup": min(rss) if rss else None,
        "rss_slope_mb_per_min_after_warmup": round(slope, 4),
        "requests_served": samples[-1]["served"] if samples else 0, "events": dict(counts),
        "breakpoint_sets": generation + 1,
    }
    print(json.dumps(summary, indent=1))
    every = max(1, len(samples) // 20)
    print("t_s rss_mb: " + ", ".join(f"{s['t']:.0f} {s['rss_mb']:.1f}" for s in samples[::every]))
    if options.json:
        Path(options.json).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    return 0 if alive else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""What the shortened switch interval (safe_attach_loader.prompt_gil_handoffs) buys and costs.

    python benchmarks/bench_gil_handoffs.py [--python PY ...] [--repeat N] [--cap S] [--out FILE]

Buys: the time our start-up imports (debugpy, debugpy.server.api, pydevd) take on a thread
of their own beside an application thread that never waits, at the default interval
(5 ms) and at STARTUP_SWITCH_INTERVAL. Two kinds of application thread: "cpu" only
computes; "cpu+stat" also makes one stat every ~100 us, as tests/targets/gil_hog.py does.
A run that has not finished after --cap seconds is stopped and shown as "> cap".

Costs: how long two CPU-bound application threads take to finish a fixed amount of work
at each interval (the interval stays short while a client is attached), as a ratio of the
short interval's time over the default's.

Every measurement is a fresh interpreter (imports are cached after the first), run A B A B
(default interval, then short), --repeat times; medians with (min-max).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

from fastattach._handoff import STARTUP_SWITCH_INTERVAL  # noqa: E402

DEFAULT_INTERVAL = 0.005

IMPORT_BESIDE_A_HOG = textwrap.dedent("""
    import os, sys, threading, time
    interval, stat = float(sys.argv[1]), sys.argv[2] == "cpu+stat"
    finished = threading.Event()
    def importer():
        sys.setswitchinterval(interval)
        started = time.perf_counter()
        import debugpy, debugpy.server.api, pydevd
        print(time.perf_counter() - started, flush=True)
        finished.set()
    threading.Thread(target=importer, daemon=True).start()
    total = 0
    while not finished.is_set():
        for i in range(2000):
            total += i * i
        if stat:
            os.path.exists("/nonexistent/hit")
""")

TWO_CPU_THREADS = textwrap.dedent("""
    import sys, threading, time
    sys.setswitchinterval(float(sys.argv[1]))
    def work():
        total = 0
        for i in range(3_000_000):
            total += i * i
    threads = [threading.Thread(target=work) for _ in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(time.perf_counter() - started, flush=True)
""")


def run_seconds(python: str, program: str, args: list[str], cap: float) -> float | None:
    """What the program printed (seconds), or None if it ran past ``cap``."""
    try:
        out = subprocess.run([python, "-c", program, *args], capture_output=True, text=True, timeout=cap,
                             check=True, env={"PYDEVD_DISABLE_FILE_VALIDATION": "1", "PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        return None
    return float(out.stdout.split()[-1])


def summary(values: list[float | None], cap: float) -> str:
    if any(v is None for v in values):
        finished = [v for v in values if v is not None]
        return f"> {cap:g} s ({len(values) - len(finished)} of {len(values)} runs hit the cap)"
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def measure(python: str, repeat: int, cap: float) -> list[str]:
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    intervals = (DEFAULT_INTERVAL, STARTUP_SWITCH_INTERVAL)
    rows = []
    for kind in ("cpu", "cpu+stat"):
        times: dict[float, list] = {interval: [] for interval in intervals}
        for _ in range(repeat):
            for interval in intervals:
                times[interval].append(run_seconds(python, IMPORT_BESIDE_A_HOG, [repr(interval), kind], cap))
        rows.append(f"| {version} | import beside a {kind} thread | "
                    + " | ".join(summary(times[interval], cap) for interval in intervals) + " | |")
    work: dict[float, list] = {interval: [] for interval in intervals}
    for _ in range(repeat):
        for interval in intervals:
            work[interval].append(run_seconds(python, TWO_CPU_THREADS, [repr(interval)], cap))
    ratios = [short / default for default, short in zip(work[DEFAULT_INTERVAL], work[STARTUP_SWITCH_INTERVAL])]
    rows.append(f"| {version} | two CPU-bound threads, same work | "
                + " | ".join(summary(work[interval], cap) for interval in intervals)
                + f" | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="interpreter to measure (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cap", type=float, default=30.0, help="seconds after which a run is stopped")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    rows = [f"| Python | measurement | interval {DEFAULT_INTERVAL * 1e3:g} ms (default) | "
            f"interval {STARTUP_SWITCH_INTERVAL * 1e6:g} us (ours) | short / default |",
            "|---|---|---|---|---|"]
    for python in args.python or [sys.executable]:
        rows += measure(python, args.repeat, args.cap)
    table = "\n".join(rows) + "\n"
    print(table, end="")
    if args.out:
        command = "python benchmarks/bench_gil_handoffs.py " + " ".join(argv if argv is not None else sys.argv[1:])
        args.out.write_text(f"## Start-up beside a thread that never waits\n\nMeasured with `{command}`; "
                            f"medians over {args.repeat} A/B repetitions, (min-max).\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

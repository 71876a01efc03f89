"""Attach by PID: time from the attach call to a listening port, RSS the attach adds, and a
repeated attach/debug/detach stress run, for each target state.

    python benchmarks/bench_attach.py [--repeat N] [--stress COUNT] [--states busy,sleep,...]

Each timing repetition starts a fresh target (tests/targets/attach_target.py), waits until it
is in its state, then times ``fastattach.attach.attach(pid)`` until it returns, and checks the
port answers a TCP connect. The first attach into a process is what users wait for, so every
repetition is a first attach. RSS is the target's VmRSS just before the attach and 0.5 s after
it (listener up, pydevd not yet imported), then after one full DAP session (pydevd imported).
Timings are medians with (min–max) over the repetitions; "loader running" is when the loader
claimed its settings inside the target (the delivery: mailbox, PEP 768 or ptrace), the rest
up to "listening" is the loader importing debugpy/fastattach and opening the socket.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from targets.attach_harness import STATES, debug_session, start_controlled, stress  # noqa: E402

from fastattach.attach import AttachError, attach  # noqa: E402


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def one_attach(state: str, control_dir: Path) -> dict:
    target, controller = start_controlled(state, control_dir)
    try:
        time.sleep(0.2)  # let the target settle into its state
        before = rss_kib(target.pid)
        started = time.perf_counter()
        report: dict = {}
        host, port = attach(target.pid, ("127.0.0.1", 0), timeout=20, report=report)
        elapsed = time.perf_counter() - started
        with socket.create_connection((host, port), timeout=5):
            pass
        time.sleep(0.5)
        listening = rss_kib(target.pid)
        debug_session(host, port, controller)
        time.sleep(0.2)
        debugged = rss_kib(target.pid)
        target.assert_healthy()
        return {"seconds": elapsed, "started": report["loader_started_s"], "method": report["method"],
                "rss_listen_kib": listening - before, "rss_debug_kib": debugged - before}
    finally:
        target.close()


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "python", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (with uncommitted changes under python/ or src/)" if dirty else "")


def summary(values: list[float], scale: float, digits: int) -> str:
    if not values:
        return "n/a"
    scaled = [v * scale for v in values]
    return (f"{statistics.median(scaled):.{digits}f} "
            f"({min(scaled):.{digits}f}–{max(scaled):.{digits}f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--stress", type=int, default=0, help="also attach/debug/detach COUNT times per state")
    parser.add_argument("--states", default=",".join(STATES))
    args = parser.parse_args()
    states = args.states.split(",")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"{args.repeat} fresh targets per state, git {git_revision()}\n")
    failures = []
    print("| target state | delivered by | attach → loader running in the target, ms | attach → listening port, ms "
          "| RSS added by listening, KiB | RSS after one DAP session, KiB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for state in states:
            runs = []
            for i in range(args.repeat):
                control = Path(scratch) / f"{state}-{i}"
                control.mkdir()
                try:
                    runs.append(one_attach(state, control))
                except (AttachError, AssertionError) as exc:
                    failures.append(f"{state} #{i + 1}: {exc}")
            methods = "/".join(sorted({r["method"] for r in runs})) or "n/a"
            print(f"| {state} | {methods} | {summary([r['started'] for r in runs], 1000, 0)} | "
                  f"{summary([r['seconds'] for r in runs], 1000, 0)} | "
                  f"{summary([r['rss_listen_kib'] for r in runs], 1, 0)} | "
                  f"{summary([r['rss_debug_kib'] for r in runs], 1, 0)} |"
                  + (f" ({args.repeat - len(runs)} failed)" if len(runs) < args.repeat else ""), flush=True)
        if args.stress:
            print(f"\nStress: {args.stress} × (attach, breakpoint hit, evaluate, continue, disconnect, stop(), "
                  f"probe: no sys.monitoring tool/event and no debugger thread left) per state, one long-lived "
                  f"target each\n")
            print("| target state | cycles OK | per cycle, ms: median (min–max) |")
            print("|---|---|---|")
            for state in states:
                control = Path(scratch) / f"stress-{state}"
                control.mkdir()
                try:
                    result = stress(state, args.stress, control)
                except AssertionError as exc:
                    print(f"| {state} | FAILED: {exc} | |", flush=True)
                    continue
                print(f"| {state} | {len(result['durations'])}/{args.stress} | "
                      f"{summary(result['durations'], 1000, 0)} |", flush=True)
    for failure in failures:
        print(f"\nFAILED {failure}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}, git {git_revision()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Child processes (subProcess): what a forked child pays, and how soon its client is told.

    python benchmarks/bench_children.py [--repeat 3] [--children 10]

A target under ``python -m fastattach --listen 127.0.0.1:0`` forks children one after the
other (each waits for the previous one to exit); a real client (fastattach.net.client) is
attached to the parent with supportsStartDebuggingRequest. Three modes, run side by side
(off, told, debugged, off, told, debugged, ...):

- off: ``--configure-subProcess false``: the fork-safe child of before (no session).
- told: subProcess on, grace period 0: the child listens, registers, the client is told
  (startDebugging) and never attaches; the child stops listening at once and runs on.
- debugged: the client attaches to every child and configures it (configurationDone).

Per child: "fork -> listening" is from just before os.fork() in the parent to the child's own
listener logging that it listens (the target's logging handler, inherited across the fork, notes
the moment; the target imports logging for it, which every mode's child RSS includes);
"fork -> told" is from just before os.fork() in the parent to the client's receipt
of startDebugging (both CLOCK_MONOTONIC, one clock for every process on Linux); "fork -> own
code" is from the same moment to the child's first line of its own (the whole wait included);
RSS is the child's VmRSS at that first line. Medians with (min-max) over every child of every
repetition.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fastattach.net.client import DAPClient

TARGET = '''
import logging, os, sys, time
parent_pid, child_index = os.getpid(), -1

class ListeningTimes(logging.Handler):
    """In a child: when its own listener logs that it listens (inherited across the fork)."""
    def emit(self, record):
        if os.getpid() != parent_pid and record.getMessage().startswith("fastattach: listening on"):
            print(f"LISTENING {child_index} {time.monotonic():.6f}", flush=True)

fastattach_log = logging.getLogger("fastattach")
fastattach_log.setLevel(logging.INFO)
fastattach_log.addHandler(ListeningTimes())
fastattach_log.propagate = False
def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
count, go = int(sys.argv[1]), sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.01)
for i in range(count):
    child_index = i
    forked_at = time.monotonic()
    pid = os.fork()
    if pid == 0:
        print(f"CHILD {i} {time.monotonic() - forked_at:.6f} {rss_kib()}", flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print(f"FORK {i} {forked_at:.6f}", flush=True)
print("DONE", flush=True)
'''

MODES = ("off", "told", "debugged")


def run(mode: str, children: int, workdir: Path) -> list[dict]:
    script = workdir / "target.py"
    script.write_text(TARGET)
    go = workdir / f"go-{mode}-{time.monotonic_ns()}"
    options = {"off": ["--configure-subProcess", "false"], "told": ["--configure-subprocess_grace_period", "0"],
               "debugged": []}[mode]
    argv = [sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", *options, str(script), str(children),
            str(go)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
        parent = DAPClient.connect(host, int(port), timeout=20)
        parent.initialize(supportsStartDebuggingRequest=True)
        parent.attach()
        told_at: list[float] = []
        child_clients: list[DAPClient] = []

        def answer_announcements() -> None:
            for _ in range(children if mode != "off" else 0):
                request = parent.wait_request("startDebugging", timeout=60)
                told_at.append(next(t for d, m, t in parent.transcript if d == "recv" and m is request))
                parent.respond(request)
                if mode == "debugged":
                    configuration = request["arguments"]["configuration"]
                    child = DAPClient.connect(configuration["connect"]["host"], configuration["connect"]["port"])
                    child.attach(**{k: v for k, v in configuration.items() if k != "request"})
                    child_clients.append(child)

        answering = threading.Thread(target=answer_announcements, daemon=True)
        answering.start()
        go.touch()
        out, _ = proc.communicate(timeout=300)
        answering.join(60)
        parent.close()
        for child in child_clients:
            child.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = [line.split() for line in out.splitlines()]
    forks = {int(f[1]): float(f[2]) for f in records if f and f[0] == "FORK"}
    listening = {int(f[1]): float(f[2]) for f in records if f and f[0] == "LISTENING"}
    results = []
    for fields in (line.split() for line in out.splitlines()):
        if fields and fields[0] == "CHILD":
            index = int(fields[1])
            result = {"own_code_ms": float(fields[2]) * 1000, "rss_kib": int(fields[3])}
            if index in listening:
                result["listening_ms"] = (listening[index] - forks[index]) * 1000
            if index < len(told_at):
                result["told_ms"] = (told_at[index] - forks[index]) * 1000
            results.append(result)
    if len(results) != children:
        raise RuntimeError(f"{mode}: {len(results)} of {children} children reported:\n{out}")
    return results


def summary(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} {unit} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--children", type=int, default=10)
    options = parser.parse_args()
    samples: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(options.repeat):
            for mode in MODES:
                samples[mode] += run(mode, options.children, Path(workdir))
    print(f"Python {sys.version.split()[0]}, {options.repeat} x {options.children} children per mode\n")
    print("| mode | fork -> listening | fork -> told | fork -> own code | child RSS |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        rows = samples[mode]
        print(f"| {mode} | {summary([r['listening_ms'] for r in rows if 'listening_ms' in r], 'ms')} | "
              f"{summary([r['told_ms'] for r in rows if 'told_ms' in r], 'ms')} | "
              f"{summary([r['own_code_ms'] for r in rows], 'ms')} | "
              f"{summary([r['rss_kib'] / 1024 for r in rows], 'MiB')} |")


if __name__ == "__main__":
    main()

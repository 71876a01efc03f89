"""How fast a watched probe file takes effect: edit -> first output, change -> first output
of the new message, and remove -> output stops.

A fresh target process watches a probe file (``fastattach.probes.watch``) and calls a
function every millisecond; a ``logging`` handler on ``fastattach.probe`` prints each
record's message with its CLOCK_MONOTONIC time (the clock is shared by the processes of
one machine). Per repetition the driver replaces the file atomically (write + rename, as a
ConfigMap update or a deployment tool does) three times and takes the time of each
replacement:

- add:    a log probe on the called function's line appears: latency to its first record;
- change: its message changes: latency to the first record with the new message;
- remove: the file lists no probe: the time from the edit to the last record that follows.

The target raises the probes' budgets (2,000 messages/s, 20% of a core) so that the probe
logs every call and all three are exact to the 1 ms call period; with the default budget
(50 messages/s) the probe would pause itself ~50 ms after it appears and "remove" could
not be seen. Each edit waits a random 0-0.5 s first, so edits fall anywhere in the
watcher's poll period (WATCH_INTERVAL, 0.5 s), which bounds all three.

    .venv/3.12/bin/python benchmarks/bench_probe_reload.py [--reps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

TARGET = '''
import logging, sys, time
import fastattach
import fastattach.probes

fastattach.configure(logpoint_messages_per_second=2000, logpoint_bytes_per_second=1_000_000,
                     probe_cpu_fraction=0.2)

class Stamp(logging.Handler):
    def emit(self, record):
        sys.stdout.write(f"OUT {time.monotonic():.6f} {record.getMessage()}\\n")
        sys.stdout.flush()

probe_log = logging.getLogger("fastattach.probe")
probe_log.addHandler(Stamp())
probe_log.setLevel(logging.INFO)
probe_log.propagate = False

def work(k):
    return k + 1  # PROBE

fastattach.probes.watch(sys.argv[1])
print("READY", flush=True)
k = 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    k = work(k)
    time.sleep(0.001)
'''


class Records:
    """The target's records, (monotonic time, message), collected by a reader thread."""

    def __init__(self, stream):
        self.items: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for text in stream:
            if text.startswith("READY"):
                self.ready.set()
            elif text.startswith("OUT "):
                _, stamp, message = text.rstrip("\n").split(" ", 2)
                with self._lock:
                    self.items.append((float(stamp), message))

    def first_after(self, t0: float, message: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                hit = next((t for t, m in self.items if t >= t0 and m == message), None)
            if hit is not None:
                return hit
            time.sleep(0.002)
        return None

    def last_of(self, prefix: str) -> float | None:
        with self._lock:
            times = [t for t, m in self.items if m.startswith(prefix)]
        return max(times) if times else None


def write_atomically(path: Path, probes: list[dict]) -> float:
    """Replace path's content by rename; the CLOCK_MONOTONIC time of the rename."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"probes": probes}))
    os.replace(tmp, path)
    return time.monotonic()


def one_rep(python: str, rep: int, target_file: Path, probe_line: int, work_dir: Path) -> dict:
    probe_file = work_dir / f"probes-{rep}.json"
    probe_file.write_text(json.dumps({"probes": []}))
    process = subprocess.Popen([python, str(target_file), str(probe_file), "60"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=work_dir)
    try:
        records = Records(process.stdout)
        if not records.ready.wait(30):
            raise RuntimeError(f"the target did not start: {process.stderr.read()[-2000:]}")
        pause = random.Random(rep).uniform
        tag = f"r{rep}"
        probe = {"id": tag, "file": str(target_file), "line": probe_line, "log": f"{tag} v1"}
        time.sleep(pause(0, 0.5))
        t_add = write_atomically(probe_file, [probe])
        first = records.first_after(t_add, f"{tag} v1", 10)
        time.sleep(pause(0, 0.5))
        t_change = write_atomically(probe_file, [dict(probe, log=f"{tag} v2")])
        changed = records.first_after(t_change, f"{tag} v2", 10)
        time.sleep(pause(0, 0.5))
        t_remove = write_atomically(probe_file, [])
        time.sleep(2.0)   # well past any poll
        last = records.last_of(tag)
        if first is None or changed is None or last is None:
            raise RuntimeError(f"rep {rep}: no record (first={first}, changed={changed}, last={last}); "
                               f"stderr: {process.stderr.read()[-2000:] if process.poll() is not None else ''}")
        return {"add": first - t_add, "change": changed - t_change, "remove": max(0.0, last - t_remove)}
    finally:
        process.kill()
        process.wait(10)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", help="write every measurement here")
    options = parser.parse_args(argv)
    options.python = os.path.abspath(options.python)   # the target runs in a temporary directory
    with tempfile.TemporaryDirectory(prefix="fastattach-probe-reload-") as tmp:
        work_dir = Path(tmp)
        target_file = work_dir / "reload_target.py"
        target_file.write_text(TARGET)
        probe_line = next(k for k, text in enumerate(TARGET.splitlines(), 1) if text.rstrip().endswith("# PROBE"))
        runs = []
        for rep in range(options.reps):
            result = one_rep(options.python, rep, target_file, probe_line, work_dir)
            runs.append(result)
            print(f"rep {rep + 1}/{options.reps}: " + "  ".join(f"{k} {v * 1000:.0f} ms" for k, v in result.items()),
                  file=sys.stderr, flush=True)
    version = subprocess.run([options.python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"python {version}, {options.reps} repetitions, one fresh process each; ms, median [min-max]")
    for key in ("add", "change", "remove"):
        values = [r[key] * 1000 for r in runs]
        print(f"  {key:7s} {statistics.median(values):6.0f} [{min(values):.0f}-{max(values):.0f}]")
    if options.json:
        Path(options.json).write_text(json.dumps({"python": version, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Request throughput of a gunicorn worker under fastattach, against no debugger.

    python benchmarks/bench_servers.py [--repeat 5] [--rounds 6] [--requests 300]

One gunicorn sync worker (``-w 1``) per mode serves tests/targets/web_app.py; this process
sends it GET requests one after the other, each on a new connection (a sync worker closes
every connection), and times them. The three modes' servers run at once and are measured side
by side: each round sends ``--requests`` to each in turn (A B C, B C A, ...), so a change in the
machine's load hits every mode alike; each of ``--repeat`` sets starts fresh servers:

- bare: ``python -m gunicorn -w 1 web_app:app``, no debugger.
- listening: ``python -m fastattach --listen 127.0.0.1:0 -m gunicorn ...``, no client.
- debugged: the same with a client attached to the master (subProcess on) and to the
  worker's own session, which it was told of by startDebugging, with breakpoints elsewhere:
  on a line of the app's module that requests never run (``elsewhere-breakpoint``).

Reported, as median and range over every round: requests per second, and the worker's CPU
time per request (all its threads, /proc/PID/schedstat), each also as a ratio to the same round's bare
server. On a loaded machine the CPU time is the steadier of the two: wall time there is
mostly waiting for a core. Run with the venv's
python (gunicorn, debugpy and fastattach installed).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from fastattach.net.client import DAPClient

APP = Path(__file__).resolve().parent.parent / "tests" / "targets" / "web_app.py"
HOST = "127.0.0.1"
MODES = ("bare", "listening", "debugged")
_DEBUG_LISTENING = re.compile(r"fastattach: listening on (\S+):(\d+)")
_HTTP_LISTENING = re.compile(r"Listening at: http://[^:]+:(\d+)")


def marker_line(marker: str) -> int:
    (line,) = [n for n, text in enumerate(APP.read_text().splitlines(), 1) if f"# {marker}" in text]
    return line


def wait_log(path: Path, pattern: re.Pattern, process: subprocess.Popen, timeout: float = 60.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = pattern.search(path.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"no {pattern.pattern!r} in the server's log:\n{path.read_text(errors='replace')}")


def get(port: int) -> None:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request("GET", "/", headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET / answered {response.status}")
    finally:
        connection.close()


class Server:
    """One fresh gunicorn in ``mode``, ready to serve (and, debugged, both sessions open)."""

    def __init__(self, mode: str, workdir: Path):
        self.mode = mode
        debugger = [] if mode == "bare" else ["-m", "fastattach", "--listen", f"{HOST}:0"]
        if mode == "debugged":
            debugger.append("--wait-for-client")
        argv = [sys.executable, "-Xfrozen_modules=off", *debugger, "-m", "gunicorn", "-w", "1", "-b", f"{HOST}:0",
                "--chdir", str(APP.parent), "--no-control-socket", "--timeout", "120", "web_app:app"]
        log = workdir / f"{mode}-{time.monotonic_ns()}.err"
        self.clients: list[DAPClient] = []
        with open(log, "wb") as err:
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                            env=dict(os.environ, WEB_APP_DIR=str(workdir)))
        try:
            if mode == "debugged":
                self._debug_master_and_worker(log)
            self.port = int(wait_log(log, _HTTP_LISTENING, self.process).group(1))
            for _ in range(50):   # warm-up: the worker is up and its code has run once
                _retry_get(self.port)
            (self.worker,) = psutil.Process(self.process.pid).children()
        except BaseException:
            self.close()
            raise

    def _debug_master_and_worker(self, log: Path) -> None:
        master = DAPClient.connect(*_address(wait_log(log, _DEBUG_LISTENING, self.process)), timeout=20)
        self.clients.append(master)
        master.initialize(supportsStartDebuggingRequest=True)
        master.attach()
        request = master.wait_request("startDebugging", timeout=60)
        master.respond(request)
        configuration = request["arguments"]["configuration"]
        worker = DAPClient.connect(configuration["connect"]["host"], configuration["connect"]["port"], timeout=20)
        self.clients.append(worker)
        worker.attach(breakpoints={str(APP): [{"line": marker_line("elsewhere-breakpoint")}]},
                      **{k: v for k, v in configuration.items() if k != "request"})

    def measure(self, requests: int) -> tuple[float, float]:
        """(requests per second, the worker's CPU time per request in µs) over ``requests``."""
        cpu_before = self._cpu_seconds()
        started = time.perf_counter()
        for _ in range(requests):
            get(self.port)
        elapsed = time.perf_counter() - started
        cpu = self._cpu_seconds() - cpu_before
        if any(client.events("stopped") for client in self.clients):
            raise RuntimeError("a session stopped: the breakpoint was not elsewhere")
        return requests / elapsed, cpu / requests * 1e6

    def _cpu_seconds(self) -> float:
        """The worker's time on a CPU, all its threads, in ns from /proc/PID/schedstat (the
        clock-tick CPU times of /proc/PID/stat are too coarse for a few hundred requests)."""
        with open(f"/proc/{self.worker.pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0]) / 1e9

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _address(match: re.Match) -> tuple[str, int]:
    return match.group(1), int(match.group(2))


def _retry_get(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _spread(values: list[float] | None, spec: str) -> str:
    if values is None:
        return "1"
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh servers per mode (default 5)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per set of servers (default 6)")
    parser.add_argument("--requests", type=int, default=300, help="requests per mode per round (default 300)")
    options = parser.parse_args()
    # A benchmark stopped with SIGTERM still stops the servers it started (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpus: dict[str, list[float]] = {mode: [] for mode in MODES}
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES[1:]}
    cpu_ratios: dict[str, list[float]] = {mode: [] for mode in MODES[1:]}
    with tempfile.TemporaryDirectory() as workdir:
        for repetition in range(options.repeat):
            servers = []
            try:
                for mode in MODES:
                    servers.append(Server(mode, Path(workdir)))
                for round_ in range(options.rounds):
                    # A B C, then B C A, ...: no mode always runs first, or right after another
                    order = servers[round_ % len(servers):] + servers[:round_ % len(servers)]
                    measured = {server.mode: server.measure(options.requests) for server in order}
                    for mode, (rate, cpu) in measured.items():
                        rates[mode].append(rate)
                        cpus[mode].append(cpu)
                    for mode in ratios:
                        ratios[mode].append(measured[mode][0] / measured["bare"][0])
                        cpu_ratios[mode].append(measured[mode][1] / measured["bare"][1])
                    print(f"  {repetition + 1}/{options.repeat} round {round_ + 1}: "
                          + ", ".join(f"{m} {r:.0f}/s {c:.0f} µs" for m, (r, c) in measured.items()), file=sys.stderr)
            finally:
                for server in servers:
                    server.close()
    print(f"Python {sys.version.split()[0]}: one gunicorn sync worker per mode; {options.repeat} sets of fresh "
          f"servers x {options.rounds} rounds x {options.requests} sequential requests per mode and round\n")
    print("| mode | requests/s | per-round ratio to bare | worker CPU µs per request | per-round CPU ratio to bare |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {_spread(rates[mode], '.0f')} | {_spread(ratios.get(mode), '.3f')} "
              f"| {_spread(cpus[mode], '.0f')} | {_spread(cpu_ratios.get(mode), '.3f')} |")
    print("\nEach cell: median (min-max) over every round.")
    print(f"\n(load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()

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

Reported: median and range of requests per second per mode over every round, and median and
range of the per-round ratio to bare (the same round's bare server). Run with the venv's
python (gunicorn, debugpy and fastattach installed).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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

    def requests_per_second(self, requests: int) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            get(self.port)
        elapsed = time.perf_counter() - started
        if any(client.events("stopped") for client in self.clients):
            raise RuntimeError("a session stopped: the breakpoint was not elsewhere")
        return requests / elapsed

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh servers per mode (default 5)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per set of servers (default 6)")
    parser.add_argument("--requests", type=int, default=300, help="requests per mode per round (default 300)")
    options = parser.parse_args()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES[1:]}
    with tempfile.TemporaryDirectory() as workdir:
        for repetition in range(options.repeat):
            servers = []
            try:
                for mode in MODES:
                    servers.append(Server(mode, Path(workdir)))
                for round_ in range(options.rounds):
                    # A B C, then B C A, ...: no mode always runs first, or right after another
                    order = servers[round_ % len(servers):] + servers[:round_ % len(servers)]
                    measured = {server.mode: server.requests_per_second(options.requests) for server in order}
                    for mode, rate in measured.items():
                        rates[mode].append(rate)
                    for mode in ratios:
                        ratios[mode].append(measured[mode] / measured["bare"])
                    print(f"  {repetition + 1}/{options.repeat} round {round_ + 1}: "
                          + ", ".join(f"{m} {r:.0f}" for m, r in measured.items()), file=sys.stderr)
            finally:
                for server in servers:
                    server.close()
    print(f"Python {sys.version.split()[0]}: one gunicorn sync worker per mode; {options.repeat} sets of fresh "
          f"servers x {options.rounds} rounds x {options.requests} sequential requests per mode and round\n")
    print("| mode | requests/s, median (min-max) | per-round ratio to bare, median (min-max) |")
    print("|---|---|---|")
    for mode in MODES:
        values = rates[mode]
        ratio = "1" if mode == "bare" else (f"{statistics.median(ratios[mode]):.3f} "
                                            f"({min(ratios[mode]):.3f}-{max(ratios[mode]):.3f})")
        print(f"| {mode} | {statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f}) | {ratio} |")
    print(f"\n(load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()

"""How long a client with the right secret takes to attach while idle connections flood the port.

    python benchmarks/bench_flood.py [--sockets 300] [--reps 5]

One debuggee (`python -m fastattach --listen 127.0.0.1:0 --secret S script`), the real pydevd
behind it. Each repetition, A B A B: attach with no flood, then attach while `sockets` idle
unauthenticated TCP connections (connected, sending nothing) are open. Timed: TCP connect to
the attach response (initialize, attach, configurationDone: pydevd included), then disconnect.
Reported: median and range of each, in seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from fastattach.net.client import DAPClient

SECRET = "bench-flood-secret-0123456789"
SERVICE = textwrap.dedent("""
    import time
    while True:
        time.sleep(0.05)
""")


def start_debuggee(folder: str) -> tuple[subprocess.Popen, tuple[str, int], str]:
    script = os.path.join(folder, "service.py")
    with open(script, "w") as out:
        out.write(SERVICE)
    err_path = os.path.join(folder, "service.err")
    with open(err_path, "wb") as err:
        process = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen",
                                    "127.0.0.1:0", "--secret", SECRET, script],
                                   stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(err_path) as err:
            match = re.search(r"listening on (\S+):(\d+)", err.read())
        if match:
            return process, (match.group(1), int(match.group(2))), err_path
        time.sleep(0.05)
    process.kill()
    raise SystemExit("the debuggee never listened")


def open_flood(address: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` idle connections: connected, sending nothing (what a port scan or an attacker holds)."""
    flood = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            continue
        flood.append(sock)
    return flood


def attach_time(address: tuple[str, int]) -> float:
    """Seconds from TCP connect to the attach response, for a client with the right secret."""
    started = time.perf_counter()
    client = DAPClient.connect(*address, timeout=30)
    try:
        client.attach(secret=SECRET, timeout=30)
        elapsed = time.perf_counter() - started
        client.disconnect()
    finally:
        client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        process, address, _ = start_debuggee(folder)
        try:
            attach_time(address)   # pydevd's import, once, outside the figures
            quiet, flooded, held = [], [], []
            for _ in range(args.reps):
                quiet.append(attach_time(address))
                flood = open_flood(address, args.sockets)
                held.append(len(flood))
                time.sleep(0.5)   # every flood connection accepted and idle by now
                try:
                    flooded.append(attach_time(address))
                finally:
                    for sock in flood:
                        sock.close()
                time.sleep(0.5)
        finally:
            process.kill()
            process.wait()
    for name, values in (("no flood", quiet), (f"{args.sockets} idle sockets", flooded)):
        print(f"{name:>18}: median {statistics.median(values):.3f} s, range {min(values):.3f}-{max(values):.3f} s"
              f" ({len(values)} attaches)")
    print(f"flood connections that connected: {min(held)}-{max(held)} of {args.sockets}")


if __name__ == "__main__":
    main()

"""Idle unauthenticated connections never hold the client slot.

A real debuggee listens with a secret; a few hundred TCP connections that send nothing are
open; a client with the right secret still attaches, and the oldest idle connections give
way. The attach time is printed (run with -s); benchmarks/bench_flood.py measures it.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from _e2e import kill_if_running

from fastattach.net.client import DAPClient
from fastattach.net.listener import MAX_PENDING_HANDSHAKES

SECRET = "flood-test-secret-0123456789"
FLOOD = 300


@pytest.fixture
def secret_debuggee(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(textwrap.dedent("""
        import time
        while True:
            time.sleep(0.05)
    """))
    err_path = tmp_path / "service.err"
    with open(err_path, "wb") as err:
        process = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen",
                                    "127.0.0.1:0", "--secret", SECRET, str(script)],
                                   stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"listening on (\S+):(\d+)", err_path.read_text())):
            assert time.monotonic() < deadline and process.poll() is None, err_path.read_text()
            time.sleep(0.05)
        yield process, (match.group(1), int(match.group(2)))
    finally:
        kill_if_running(process)


def test_a_client_with_the_secret_gets_in_during_a_flood_of_idle_connections(secret_debuggee):
    process, address = secret_debuggee
    # GIVEN a few hundred connections that never send a byte, all accepted
    flood = []
    try:
        for _ in range(FLOOD):
            flood.append(socket.create_connection(address, timeout=5))
        time.sleep(1.0)
        # WHEN a client with the right secret connects
        started = time.perf_counter()
        with DAPClient.connect(*address) as client:
            client.attach(secret=SECRET)
            took = time.perf_counter() - started
            # THEN it is attached, not told the process is busy
            assert client.request("threads")["success"]
        print(f"\nattached in {took:.3f} s (pydevd's start included) while {FLOOD} idle unauthenticated "
              f"connections were open")
        # AND the oldest idle connections were closed to make room (only the newest wait)
        closed = 0
        for sock in flood[:FLOOD - MAX_PENDING_HANDSHAKES - 1]:
            sock.settimeout(5)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == FLOOD - MAX_PENDING_HANDSHAKES - 1
        assert process.poll() is None
    finally:
        for sock in flood:
            sock.close()

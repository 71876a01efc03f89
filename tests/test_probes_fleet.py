"""A fleet on one machine: four processes of one service share one probe file (issue 14, point 6).

Each runs ``python -m fastattach --probes FILE service.py``; its `fastattach.probe` records go to
its stdout with its process id. Deadlines are generous bounds on waits, never measurements.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from _e2e import kill_if_running
from conftest import wait_until

SERVICE = textwrap.dedent("""
    import logging, os, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s pid=%(process)d %(message)s")

    def handle(n):
        reply = n * 2  # PROBE
        return reply

    print("ready", os.getpid(), flush=True)
    n = 0
    while True:
        handle(n)
        n += 1
        time.sleep(0.02)
""")
PROBE_LINE = next(i for i, text in enumerate(SERVICE.splitlines(), 1) if text.endswith("# PROBE"))


def write_atomically(path, document) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)


@pytest.fixture
def fleet(tmp_path):
    service = tmp_path / "service.py"
    service.write_text(SERVICE)
    probe_file = tmp_path / "probes.json"
    write_atomically(probe_file, {"probes": []})
    outputs = [tmp_path / f"instance-{i}.out" for i in range(4)]
    processes = []
    try:
        for out in outputs:
            with open(out, "wb") as stream:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "fastattach", "--probes", str(probe_file), str(service)],
                    stdout=stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=dict(os.environ, PYTHONUNBUFFERED="1")))
        for out in outputs:
            wait_until(lambda out=out: "ready" in out.read_text(), what=f"{out.name} to start")
        yield probe_file, outputs, processes
    finally:
        for process in processes:
            kill_if_running(process)


def probe_lines(out, probe_id: str) -> list[str]:
    return [line for line in out.read_text().splitlines()
            if line.startswith("fastattach.probe ") and f" [{probe_id}] " in line]


def test_four_processes_follow_one_probe_file(fleet):
    probe_file, outputs, processes = fleet
    pids = {p.pid for p in processes}

    # GIVEN four instances; WHEN a probe is added to the shared file
    write_atomically(probe_file, {"probes": [
        {"id": "orders", "file": "service.py", "line": PROBE_LINE, "log": "[orders] n={n}"}]})
    # THEN each instance logs it, each record naming its process
    for out in outputs:
        wait_until(lambda out=out: probe_lines(out, "orders"), what=f"the probe's output in {out.name}")
    named = {int(re.search(r"pid=(\d+)", probe_lines(out, "orders")[0]).group(1)) for out in outputs}
    assert named == pids

    # WHEN it is removed from the file, THEN the output stops everywhere
    write_atomically(probe_file, {"probes": []})
    for out in outputs:
        wait_until(lambda out=out: "0 probes set" in out.read_text(), what=f"{out.name} to reload")
    counts = [len(probe_lines(out, "orders")) for out in outputs]
    time.sleep(1.0)   # room for output that should not come
    assert [len(probe_lines(out, "orders")) for out in outputs] == counts

    # WHEN a probe with an expiry is added, THEN it logs and then stops by itself, with no edit
    write_atomically(probe_file, {"probes": [
        {"id": "brief", "file": "service.py", "line": PROBE_LINE, "log": "[brief] n={n}", "expires": 1.5}]})
    for out in outputs:
        wait_until(lambda out=out: probe_lines(out, "brief"), what=f"the expiring probe in {out.name}")
        wait_until(lambda out=out: "expired after" in out.read_text(), what=f"the expiry in {out.name}")
    counts = [len(probe_lines(out, "brief")) for out in outputs]
    time.sleep(1.0)
    assert [len(probe_lines(out, "brief")) for out in outputs] == counts
    assert all(p.poll() is None for p in processes), "no instance may have died"

"""The listener and relay in front of the real pydevd, in a real debuggee subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from fastattach.net.client import DAPClient
from fastattach.net.handshake import PYDEVD_CAPABILITIES

# debugpy's own in-process DAP server, asked what it answers to initialize.
CAPABILITIES_PROBE = textwrap.dedent("""
    import json, sys
    import debugpy
    host, port = debugpy.listen(("127.0.0.1", 0), in_process_debug_adapter=True)
    from fastattach.net.client import DAPClient
    client = DAPClient.connect(host, port)
    print(json.dumps(client.initialize()["body"]))
    client.close()
""")

DEBUGGEE = textwrap.dedent("""
    import os, sys, threading, time
    import fastattach

    def work(i):
        doubled = i * 2  # BREAK
        return doubled

    host, port = fastattach.listen(("127.0.0.1", 0), secret=os.environ.get("TEST_SECRET"))
    print(port, flush=True)

    def close_on_request():
        for line in sys.stdin:
            if line.strip() == "close":
                fastattach._api.session().listener.close()

    # Untraced, like a management thread: with suspend-all at a breakpoint, a traced thread
    # would itself be held before it could call close().
    closer = threading.Thread(target=close_on_request, daemon=True)
    closer.pydev_do_not_trace = True
    closer.is_pydev_daemon_thread = True
    closer.start()
    deadline = time.monotonic() + 120
    i = 0
    while time.monotonic() < deadline:
        work(i)
        i += 1
        if i % 10 == 0:
            print("tick", i, "pydevd" in sys.modules, flush=True)
        time.sleep(0.01)
""")


def run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-Xfrozen_modules=off", "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1"))


def test_capabilities_match_the_real_pydevd():
    result = run_python(CAPABILITIES_PROBE)
    assert result.returncode == 0, result.stderr
    real = json.loads(result.stdout.strip().splitlines()[-1])
    real.pop("pydevd")
    assert real == PYDEVD_CAPABILITIES


class Debuggee:
    def __init__(self, directory, secret: str | None = None):
        self.path = str(directory / "debuggee.py")
        with open(self.path, "w") as f:
            f.write(DEBUGGEE)
        self.break_line = DEBUGGEE.splitlines().index(next(line for line in DEBUGGEE.splitlines()
                                                           if "# BREAK" in line)) + 1
        env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1", TEST_SECRET=secret or "")
        if not secret:
            env.pop("TEST_SECRET")
        self.process = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-u", self.path],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env)
        self.port = int(self._readline(30))

    def _readline(self, timeout: float) -> str:
        import selectors
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise AssertionError("the debuggee printed nothing in time")
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the debuggee exited: {self.process.stderr.read()}")
        return line

    def last_tick(self, timeout: float = 10) -> int:
        return int(self._readline(timeout).split()[1])

    def pydevd_loaded(self, timeout: float = 10) -> bool:
        return self._readline(timeout).split()[2] == "True"

    def wait_pydevd_loaded(self, timeout: float = 20) -> bool:
        """Whether a tick says pydevd is loaded within ``timeout``: ticks printed before the
        attach may still wait in the pipe on a loaded machine."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if self.pydevd_loaded(remaining):
                return True
        return False

    def wait_ticking(self, timeout: float = 10) -> None:
        """Proves the program runs: two fresh ticks in a row."""
        first = self.last_tick(timeout)
        assert self.last_tick(timeout) > first

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()


@pytest.fixture
def debuggee(tmp_path):
    processes = []

    def start(**kwargs):
        process = Debuggee(tmp_path, **kwargs)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


def stop_at_breakpoint(client, target) -> int:
    client.attach(breakpoints={target.path: [{"line": target.break_line}]}, secret="s3cret")
    stopped = client.wait_stopped(timeout=30)
    frame = client.top_frame(stopped["threadId"])
    assert frame["line"] == target.break_line
    return stopped["threadId"]


def test_full_session_through_the_relay(debuggee):
    target = debuggee(secret="s3cret")
    client = DAPClient.connect("127.0.0.1", target.port)
    try:
        thread_id = stop_at_breakpoint(client, target)
        frame = client.top_frame(thread_id)
        assert int(client.evaluate("i * 2", frame["id"])) % 2 == 0
        # pydevd's per-thread command queues are made race-free (see AtomicDefaultDict)
        tables = ("[type(t).__name__ for t in (__import__('_pydevd_bundle.pydevd_constants', fromlist=['x'])"
                  ".get_global_debugger()._cmd_queue, __import__('_pydevd_bundle.pydevd_constants', fromlist=['x'])"
                  ".get_global_debugger()._thread_events)]")
        assert client.evaluate(tables, frame["id"]) == "['AtomicDefaultDict', 'AtomicDefaultDict']"
        # and its thread ids come from our counter (see Seam.install_thread_ids)
        ids = ("__import__('_pydevd_bundle.pydevd_constants', fromlist=['x'])"
               "._get_or_compute_thread_id_with_lock.__module__")
        assert client.evaluate(ids, frame["id"]) == "'fastattach.engine.seam'"
        client.set_breakpoints(target.path, [])
        client.request("continue", {"threadId": thread_id})
        target.wait_ticking()
        seqs = [m["seq"] for d, m, _ in client.transcript if d == "recv"]
        assert seqs == list(range(1, len(seqs) + 1))
        client.disconnect()
        target.wait_ticking()
    finally:
        client.close()
    # a second client attaches later and stops again
    again = DAPClient.connect("127.0.0.1", target.port)
    try:
        stop_at_breakpoint(again, target)
        again.disconnect()
        target.wait_ticking()
    finally:
        again.close()


def test_client_vanishing_while_stopped_resumes_the_debuggee(debuggee):
    target = debuggee(secret="s3cret")
    client = DAPClient.connect("127.0.0.1", target.port)
    stop_at_breakpoint(client, target)
    client.close()  # no disconnect request: the relay must send pydevd one
    target.wait_ticking(timeout=20)
    # and pydevd removed the breakpoint: a new client sees the program running freely
    again = DAPClient.connect("127.0.0.1", target.port)
    try:
        again.attach(secret="s3cret")
        assert not again.events("stopped")
        target.wait_ticking()
        again.disconnect()
    finally:
        again.close()


def test_wrong_secret_never_imports_pydevd(debuggee):
    target = debuggee(secret="s3cret")
    client = DAPClient.connect("127.0.0.1", target.port)
    try:
        client.initialize()
        response = client.request("attach", {"secret": "nope"}, check=False)
        assert not response["success"]
    finally:
        client.close()
    target.wait_ticking()
    assert not target.pydevd_loaded()
    probe = DAPClient.connect("127.0.0.1", target.port)
    try:
        probe.attach(secret="s3cret")
        target.wait_ticking()
        assert target.wait_pydevd_loaded()
        probe.disconnect()
    finally:
        probe.close()


def test_listener_close_while_stopped_resumes_the_debuggee(debuggee):
    target = debuggee(secret="s3cret")
    client = DAPClient.connect("127.0.0.1", target.port)
    try:
        stop_at_breakpoint(client, target)
        # WHEN the program closes its listener while the client holds it at a breakpoint
        target.process.stdin.write("close\n")
        target.process.stdin.flush()
        # THEN the program runs again, and the client's connection is closed
        target.wait_ticking(timeout=20)
        deadline = time.monotonic() + 10
        while not client.closed:
            assert time.monotonic() < deadline, "the client connection stayed open"
            time.sleep(0.02)
    finally:
        client.close()


def test_atomic_default_dict_gives_every_thread_the_same_new_value(switch_interval):
    import threading

    from fastattach.engine.seam import AtomicDefaultDict

    def slow_factory():
        time.sleep(0.001)  # what a factory written in Python allows: another thread runs here
        return object()

    # GIVEN eight threads asking at once for the same missing key, as pydevd's threads do
    # for a thread's command queue
    def race(table) -> int:
        start = threading.Barrier(8)
        seen = []

        def ask():
            start.wait()
            seen.append(table["thread-1"])

        workers = [threading.Thread(target=ask) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return len({id(value) for value in seen})

    # THEN ours hands out exactly one object; a defaultdict hands out several (the race)
    # before 3.14. From 3.14 on a defaultdict keeps the first value stored, as ours does, so
    # the two agree there (the patch stays: it costs nothing and pydevd runs on 3.12 too)
    from collections import defaultdict
    assert race(AtomicDefaultDict(slow_factory)) == 1
    if sys.version_info < (3, 14):
        assert race(defaultdict(slow_factory)) > 1
    else:
        assert race(defaultdict(slow_factory)) == 1


def test_pydevd_no_longer_keeps_finished_threads_alive():
    import gc
    import threading
    import weakref

    import debugpy.server.api  # noqa: F401  (puts debugpy's vendored pydevd on sys.path)
    from _pydevd_bundle import pydevd_constants

    from fastattach.engine.seam import Seam

    # GIVEN pydevd's thread ids made by fastattach
    seam = Seam()
    seam.install_thread_ids()
    # WHEN pydevd names short-lived threads, as it does for every thread it sees start
    finished, names = [], []
    try:
        for _ in range(3):
            thread = threading.Thread(target=lambda: None)
            thread.start()
            thread.join()
            names.append(pydevd_constants.get_thread_id(thread))
            finished.append(weakref.ref(thread))
            del thread
    finally:
        seam.undo()
    gc.collect()
    # THEN the ids are distinct and stable, and the threads are freed once they are gone
    assert len(set(names)) == 3 and all("_fa_" in name for name in names)
    assert [ref() for ref in finished] == [None, None, None]

"""Start attach targets, watch their output, and always clean them up (see test_attach*.py)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fastattach.attach._errors import process_state

TARGETS = Path(__file__).parent
REPO = TARGETS.parent.parent
ATTACH_TARGET = TARGETS / "attach_target.py"
PROBE_LOADER = TARGETS / "attach_probe_loader.py"
STATES = ("busy", "busy2", "sleep", "accept", "alloc")


# Attach by PID is implemented for x86-64 Linux only; every attach test module uses this mark.
LINUX_X86_64_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
                                       reason="attach by PID is implemented for x86-64 Linux only")


@pytest.fixture
def cleanup():
    """A list to put started Targets in; each is killed (by PID) after the test, pass or fail."""
    started: list[Target] = []
    yield started
    for target in started:
        target.close()


class Target:
    """A target process with its stdout lines in a queue; ``close()`` kills it by PID."""

    def __init__(self, argv: list[str], *, env: dict | None = None, cwd: str | None = None,
                 ready_timeout: float = 30.0):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})}, cwd=cwd)
        self.pid = self.proc.pid
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines.append), daemon=True).start()
        self.accept_port = None
        line = self.wait_line(lambda text: text == "ready" or text.startswith("accept-port"), ready_timeout)
        if line.startswith("accept-port"):
            self.accept_port = int(line.split()[1])
            self.wait_line(lambda text: text == "ready", ready_timeout)

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def wait_line(self, predicate, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"target {self.pid} printed no matching line within {timeout} s; "
                                     f"state {process_state(self.pid)}; stderr: {self.stderr_text()}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"target {self.pid} exited with {self.proc.returncode}; "
                                         f"stderr: {self.stderr_text()}") from None
                continue
            if predicate(line):
                return line

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines[-40:])

    def send_line(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def assert_healthy(self) -> None:
        """Running (not stopped, not dead), as a production process must stay after an attach."""
        assert self.proc.poll() is None, f"target exited with {self.proc.returncode}: {self.stderr_text()}"
        state = process_state(self.pid)
        assert not state.startswith(("T", "t", "Z")), f"target left in state {state}"

    def wait_main_thread_blocked(self, timeout: float = 10.0) -> str:
        """Wait until /proc shows the main thread inside a syscall; return its number."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.pid}/task/{self.pid}/syscall") as f:
                    first = f.read().split()[0]
            except (OSError, IndexError):
                first = "running"
            if first not in ("running", "-1"):
                return first
            time.sleep(0.01)
        raise AssertionError(f"the main thread of {self.pid} never blocked within {timeout} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            if process_state(self.pid).startswith(("T", "t")):
                os.kill(self.pid, signal.SIGCONT)
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass


def probe_records(path) -> list[dict]:
    """What attach_probe_loader.py recorded, one dict per run of it in the target."""
    import json
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def assert_port_answers(port: int) -> None:
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def other_python() -> tuple[str, str] | None:
    """(version, interpreter) of a Python other than this one that runs here, with
    fastattach installed: the host has .venv/3.12 and .venv/3.13, the sid chroot .venv/3.14
    and .venv/3.15 (the other pair's interpreters do not exist on that side)."""
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venvs = REPO / ".venv"
    for venv in sorted(venvs.iterdir()) if venvs.is_dir() else []:
        python = venv / "bin" / "python"
        if venv.name != ours and python.exists():   # exists() follows the link to the interpreter
            return venv.name, str(python)
    return None


def start_state(state: str, python: str = sys.executable, *, env: dict | None = None, limit_s: float = 300.0,
                python_args: tuple[str, ...] = ()) -> Target:
    return Target([python, *python_args, "-u", str(ATTACH_TARGET), state, str(limit_s)], env=env)


def start_program(program: str, python: str = sys.executable, *, env: dict | None = None) -> Target:
    return Target([python, "-uc", program], env=env)


def hit_line() -> int:
    """The line of attach_target.py marked with the ATTACH-HIT comment (exactly one)."""
    found = [n for n, line in enumerate(ATTACH_TARGET.read_text().splitlines(), 1)
             if line.rstrip().endswith("# ATTACH-HIT")]
    if len(found) != 1:
        raise LookupError(f"{ATTACH_TARGET} has {len(found)} ATTACH-HIT lines, expected one")
    return found[0]


class Controller:
    """Sends the target's "hit" and "stop" commands by the route its state listens on."""

    def __init__(self, target: Target, state: str, control_dir: Path):
        self.target, self.state, self.control_dir = target, state, Path(control_dir)

    def send(self, command: str) -> None:
        if self.state == "sleep":
            self.target.send_line(command)
        elif self.state == "accept":
            import socket
            with socket.create_connection(("127.0.0.1", self.target.accept_port), timeout=10) as s:
                s.sendall(command.encode() + b"\n")
        else:
            (self.control_dir / command).touch()

    def end_hits(self) -> None:
        """Busy states keep hitting while the file exists; one-shot states need nothing."""
        if self.state not in ("sleep", "accept"):
            (self.control_dir / "hit").unlink(missing_ok=True)

    def stop_and_probe(self, timeout: float = 20.0) -> dict:
        """fastattach.stop() in the target; returns what sys.monitoring still holds there."""
        import json
        self.send("stop")
        line = self.target.wait_line(lambda text: text.startswith("probe "), timeout)
        return json.loads(line.split(" ", 1)[1])


def start_controlled(state: str, control_dir: Path, python: str = sys.executable, *, env: dict | None = None,
                     python_args: tuple[str, ...] = ()) -> tuple[Target, Controller]:
    target = start_state(state, python, env={**(env or {}), "ATTACH_CONTROL_DIR": str(control_dir)},
                         python_args=python_args)
    if state in ("busy2", "sleep", "accept"):
        target.wait_main_thread_blocked()
    return target, Controller(target, state, control_dir)


def debug_session(host: str, port: int, controller: Controller, timeout: float = 30.0, **attach_args) -> str:
    """A full DAP session: breakpoint at ATTACH-HIT, wait for the stop, evaluate, continue,
    disconnect. Returns the evaluated token ("<source>-<pid>")."""
    from fastattach.net.client import DAPClient

    client = DAPClient.connect(host, port, timeout=timeout)
    try:
        verified = client.attach(breakpoints={str(ATTACH_TARGET): [{"line": hit_line()}]}, timeout=timeout,
                                 **attach_args)
        assert verified[str(ATTACH_TARGET)][0]["verified"], verified
        controller.send("hit")
        stopped = client.wait_stopped(timeout)
        controller.end_hits()
        frame = client.top_frame(stopped["threadId"])
        assert frame["line"] == hit_line(), frame
        token = client.evaluate("token", frame["id"])
        client.request("continue", {"threadId": stopped["threadId"]}, timeout=timeout)
        return token.strip("'\"")
    finally:
        controller.end_hits()
        client.disconnect()


NOTHING_LEFT = {"tools": {}, "global_events": {}, "local_events": {}, "settrace": False, "debugger_threads": []}


def stress(state: str, count: int, control_dir: Path, python: str = sys.executable, timeout: float = 30.0) -> dict:
    """``count`` times into one target in ``state``: attach, debug (hit, evaluate, continue),
    detach, stop() in the target and probe that nothing is left. Raises on the first failure,
    naming the iteration; returns the durations of the cycles."""
    from fastattach.attach import attach

    target, controller = start_controlled(state, control_dir, python)
    try:
        durations = []
        for iteration in range(count):
            started = time.monotonic()
            try:
                host, port = attach(target.pid, ("127.0.0.1", 0), timeout=timeout)
                token = debug_session(host, port, controller, timeout=timeout)
                assert token.endswith(f"-{target.pid}"), token
                probe = controller.stop_and_probe(timeout)
                assert probe == NOTHING_LEFT, probe
                target.assert_healthy()
            except BaseException as exc:
                raise AssertionError(f"{state}: iteration {iteration + 1} of {count} failed: {exc!r}; "
                                     f"target state {process_state(target.pid)}; "
                                     f"stderr: {target.stderr_text()}") from exc
            durations.append(time.monotonic() - started)
        return {"state": state, "count": count, "durations": durations}
    finally:
        target.close()

"""Debug servers for the end-to-end tests: start one on a target script, find its port, stop it.

``SERVER`` picks what the end-to-end tests run against ("fastattach"; set
FASTATTACH_E2E_SERVER=debugpy to check the tests themselves against the reference). The
scenario comparison runs both kinds regardless.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fastattach.net.client import DAPClient

SERVER = os.environ.get("FASTATTACH_E2E_SERVER", "fastattach")

TARGETS = Path(__file__).parent / "targets"
HOST = "127.0.0.1"
_LISTENING = re.compile(r"fastattach: listening on (\S+):(\d+)")


def target(name: str) -> Path:
    return TARGETS / name


def marker_line(path: Path, marker: str) -> int:
    """The 1-based line carrying the comment ``# <marker>`` (exactly that name, once)."""
    pattern = re.compile(r"#\s*" + re.escape(marker) + r"(?![\w-])")
    found = [n for n, line in enumerate(Path(path).read_text().splitlines(), 1) if pattern.search(line)]
    if len(found) != 1:
        raise LookupError(f"{path} has {len(found)} lines marked {marker!r}, expected exactly one")
    return found[0]


def kill_if_running(proc: subprocess.Popen) -> None:
    """The ``finally`` of a test that drives a debuggee it started: never leave it running."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class DebugServer:
    """A debuggee run as ``python -m <kind> --listen ... --wait-for-client script args``.

    stdout and stderr go to files in ``out_dir`` so a failing test can show them, and
    so a full pipe can never block the debuggee.
    """

    def __init__(self, kind: str, script: Path, *args: str, out_dir: Path,
                 python: str = sys.executable, wait_for_client: bool = True, start_timeout: float = 30.0,
                 env: dict[str, str] | None = None, options: tuple[str, ...] = ()):
        if kind not in ("debugpy", "fastattach"):
            raise ValueError(f"unknown debug server {kind!r}: expected 'debugpy' or 'fastattach'")
        self.kind = kind
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.out_dir / f"{kind}-target.out"
        self.stderr_path = self.out_dir / f"{kind}-target.err"
        # debugpy's CLI prints no port, so it gets a free one; ours picks port 0 and says which.
        port = free_port() if kind == "debugpy" else 0
        argv = [python, "-Xfrozen_modules=off", "-m", kind, "--listen", f"{HOST}:{port}"]
        if wait_for_client:
            argv.append("--wait-for-client")
        argv += [*options, str(script), *args]   # options: the debug server's own (--configure-NAME VALUE)
        self.argv = argv
        self._children: set[psutil.Process] = set()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        try:
            self.address = self._wait_listening(port, start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, port: int, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kind == "fastattach":
                match = _LISTENING.search(self.stderr_path.read_text(errors="replace"))
                if match:
                    return match.group(1), int(match.group(2))
            elif self._listens_on(port):
                return HOST, port
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode} before listening:\n"
                                   + self.output())
            time.sleep(0.05)
        raise TimeoutError(f"{self.kind} did not listen within {timeout} s:\n" + self.output())

    def _listens_on(self, port: int) -> bool:
        # A probe connection would be taken for a client, so look at the sockets instead.
        # debugpy's adapter is a detached process (its parent is init), so the owner of the
        # listening socket is remembered and stopped together with the debuggee.
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
                if connection.pid is not None and connection.pid != self.process.pid:
                    try:
                        self._children.add(psutil.Process(connection.pid))
                    except psutil.NoSuchProcess:
                        pass
                return True
        return False

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_stdout(self, pattern: str, timeout: float = 20.0) -> re.Match:
        """The first match of ``pattern`` in the debuggee's stdout, waiting for it to appear."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.stdout(), re.MULTILINE)
            if match:
                return match
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError(f"the debuggee printed nothing matching {pattern!r}:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return f"--- {self.kind} stdout ---\n{self.stdout()}--- {self.kind} stderr ---\n{self.stderr()}"

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the debuggee did not exit within {timeout} s:\n{self.output()}") from None

    def stop(self) -> None:
        """Stop the debuggee and anything it started (debugpy's adapter), by PID."""
        children = set(self._children)
        try:
            children.update(psutil.Process(self.process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for child in children:
            try:
                child.kill()  # psutil checks the creation time, so a reused PID is left alone
                child.wait(5)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass

    def __enter__(self) -> DebugServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Stop:
    """One ``stopped`` event with the top frame it stopped in."""

    thread_id: int
    reason: str
    line: int
    function: str
    frame_id: int
    path: str
    body: dict


def wait_stop(client: DAPClient, timeout: float = 20.0) -> Stop:
    body = client.wait_stopped(timeout)
    frame = client.top_frame(body["threadId"])
    return Stop(body["threadId"], body.get("reason", ""), frame["line"], frame["name"], frame["id"],
                frame.get("source", {}).get("path", ""), body)


def variables(client: DAPClient, frame_id: int, scope: str = "Locals") -> dict[str, str]:
    """``{name: value}`` of one scope of a frame, through scopes + variables."""
    scopes = client.request("scopes", {"frameId": frame_id})["body"]["scopes"]
    matching = [s for s in scopes if s["name"] == scope]
    if not matching:
        raise LookupError(f"frame {frame_id} has no scope {scope!r}, only {[s['name'] for s in scopes]}")
    found = client.request("variables", {"variablesReference": matching[0]["variablesReference"]})
    return {v["name"]: v["value"] for v in found["body"]["variables"]}


def outputs(client: DAPClient, category: str | None = None) -> list[str]:
    """Drain the pending ``output`` events; telemetry is never program output."""
    return [e["body"]["output"] for e in client.events("output")
            if e["body"].get("category") != "telemetry" and category in (None, e["body"].get("category"))]


# Evaluated in the stopped debuggee through DAP: the C filter's event counters, or None
# when the filter is not installed (pydevd then runs unmodified, so a session still
# works and only this check can tell).
_FILTER_STATS = "__import__('fastattach').breakpoint_filter_stats()"


def breakpoint_filter_stats(client: DAPClient, frame_id: int) -> dict[str, int] | None:
    value = client.evaluate(_FILTER_STATS, frame_id)
    return None if value == "None" else ast.literal_eval(value)

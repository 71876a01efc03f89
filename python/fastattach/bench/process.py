"""One debuggee process (target.py) seen from the harness: start, talk, always reap."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

TARGET_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "target.py")


class TargetError(RuntimeError):
    """The debuggee reported an error, exited early, or did not answer in time."""


class TargetProcess:
    """A fresh ``python target.py SPEC`` process; use it as a context manager.

    Leaving the ``with`` block kills the process (by its pid) if it is still running,
    whatever happened inside.
    """

    def __init__(self, python: str, spec: dict, env: dict | None = None, prefix: list[str] = ()):
        """prefix: a command the interpreter runs under (valgrind, for instruction counts)."""
        run_env = dict(os.environ)
        # pydevd warns on every start of 3.12 with frozen modules on; every mode gets
        # the same flag so the interpreters being compared are configured alike.
        run_env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        run_env.pop("COVERAGE_CORE", None)
        run_env.update(env or {})
        self.spec = spec
        self.process = subprocess.Popen(
            [*prefix, python, "-X", "frozen_modules=off", TARGET_SCRIPT, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=run_env, text=True, bufsize=1,
        )
        self._records: list[dict] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            if line.startswith("@@"):
                record = json.loads(line[2:])
                record["received"] = time.monotonic()
                with self._cond:
                    self._records.append(record)
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            if len(self._stderr) < 200:
                self._stderr.append(line)

    def stderr_tail(self, lines: int = 15) -> str:
        return "".join(self._stderr[-lines:])

    def wait_record(self, kind: str, timeout: float) -> dict:
        """The first unread record of ``kind``; raises TargetError on an error record or exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, record in enumerate(self._records):
                    if record["kind"] == "error":
                        raise TargetError(f"debuggee failed: {record['error']}\n{self.stderr_tail()}")
                    if record["kind"] == kind:
                        del self._records[i]
                        return record
                if self._eof:
                    raise TargetError(f"debuggee exited (status {self.process.poll()}) before "
                                      f"sending {kind!r}\n{self.stderr_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TargetError(f"no {kind!r} from the debuggee within {timeout:.0f} s")
                self._cond.wait(remaining)

    def records(self, kind: str) -> list[dict]:
        with self._cond:
            return [r for r in self._records if r["kind"] == kind]

    def send(self, command: str) -> None:
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as error:
            raise TargetError(f"debuggee stopped reading commands: {error}\n{self.stderr_tail()}") from error

    def finish(self, timeout: float = 20.0) -> None:
        """Tells the debuggee to quit and waits for it; kills it if it does not."""
        try:
            self.send("quit")
        except TargetError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> TargetProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass
        for reader in self._readers:
            reader.join(5)

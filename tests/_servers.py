"""Real servers with workers under ``python -m fastattach``, for tests/test_servers_*.py.

``gunicorn(...)`` and ``uvicorn(...)`` start the server on tests/targets/web_app.py with two
workers and a port the server picks itself (read back from its log, so no port race), and
return a ``WebServer``: the ``DebugServer`` plus HTTP helpers that name the worker serving
each request. ``held_by_each_worker`` sends one held request per worker at once: with every
worker held, no worker can take a second request, so the answers name every live worker.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
from _e2e import HOST, DebugServer, kill_if_running, target

WEB_APP = target("web_app.py")
VIEW_LINE_MARK = "view-breakpoint"

_GUNICORN_LISTENING = re.compile(r"Listening at: http://[^:]+:(\d+)")
_UVICORN_LISTENING = re.compile(r"Uvicorn running on http://[^:]+:(\d+)")


def http_get(port: int, path: str = "/", timeout: float = 60.0) -> dict:
    """One request on a new connection (so each request is accepted anew by some worker)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise AssertionError(f"GET {path} answered {response.status}: {body[:500]!r}")
        return json.loads(body)
    finally:
        connection.close()


class WebServer:
    """A server under fastattach: its debug address, its HTTP port and its workers."""

    def __init__(self, server: DebugServer, listening: re.Pattern, out_dir: Path, workers: int):
        self.debug = server
        self.out_dir = out_dir
        self.workers = workers
        self.port = int(self._wait_log(listening).group(1))
        self._holds = 0

    def _wait_log(self, pattern: re.Pattern, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.debug.stderr())
            if match:
                return match
            if time.monotonic() > deadline or self.debug.process.poll() is not None:
                raise TimeoutError(f"the server never logged {pattern.pattern!r}:\n{self.debug.output()}")
            time.sleep(0.05)

    def worker_pids(self) -> set[int]:
        """The live worker processes: the server's children that run the app (uvicorn's
        spawn also starts multiprocessing's resource tracker, which is no worker)."""
        found = set()
        for child in psutil.Process(self.debug.process.pid).children():
            try:
                if "resource_tracker" not in " ".join(child.cmdline()):
                    found.add(child.pid)
            except psutil.NoSuchProcess:
                pass
        return found

    def wait_workers(self, count: int | None = None, without: set[int] = frozenset(),
                     timeout: float = 60.0) -> set[int]:
        """Wait until ``count`` workers (default: all) are up, none of them in ``without``,
        and each answers a request: a worker is ready once it served one."""
        count = self.workers if count is None else count
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if len(pids) == count and not pids & without:
                try:
                    served = self.held_by_each_worker()
                except ConnectionRefusedError:
                    served = set()   # uvicorn's workers listen only once they have started
                if served == pids:
                    return pids
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {self.worker_pids()} (wanted {count}, none of {without}):\n"
                                   + self.debug.output())
            time.sleep(0.2)

    def held_by_each_worker(self, timeout: float = 60.0) -> set[int]:
        """One request per worker, all held at once, then released: the pids that served them."""
        return {answer["pid"] for answer in self.held_answers(timeout)}

    def held_answers(self, timeout: float = 60.0) -> list[dict]:
        """One request per worker, all held at once, then released: each worker's /state."""
        names = []
        for _ in range(self.workers):
            self._holds += 1
            names.append(f"{self._holds}")
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            answers = []
            try:
                for name in names:
                    # Each held request is sent once the previous one is held, so a busy worker
                    # cannot be handed two connections while it is still between them.
                    answers.append(pool.submit(http_get, self.port, f"/hold/{name}", timeout))
                    self.wait_held(name, timeout, answers[-1])
            finally:
                for name in names:   # released whatever happened, so no worker stays blocked
                    (self.out_dir / f"release-{name}").touch()
            return [future.result(timeout) for future in answers]

    def wait_held(self, name: str, timeout: float = 60.0, answer: concurrent.futures.Future | None = None) -> int:
        held = self.out_dir / f"held-{name}"
        deadline = time.monotonic() + timeout
        while not held.exists():
            if answer is not None and answer.done():
                answer.result()   # the request failed (refused, reset): say how
                raise AssertionError(f"the request held as {name!r} was answered without being held")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker took the request held as {name!r}:\n{self.debug.output()}")
            time.sleep(0.01)
        return int(held.read_text())

    def stop(self) -> None:
        self.debug.stop()

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _start(server_args: list[str], listening: re.Pattern, out_dir: Path, *, workers: int,
           wait_for_client: bool, env: dict[str, str] | None, options: tuple[str, ...] = ()) -> WebServer:
    app_dir = out_dir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    # "-m" and the module take the script's place, exactly as on the command line.
    server = DebugServer("fastattach", "-m", *server_args, out_dir=out_dir, wait_for_client=wait_for_client,
                         env={"WEB_APP_DIR": str(app_dir), **(env or {})}, options=options)
    try:
        if wait_for_client:
            return _Pending(server, listening, app_dir, workers)
        return WebServer(server, listening, app_dir, workers)
    except BaseException:
        server.stop()
        raise


class _Pending:
    """A server held by ``--wait-for-client``: it logs its port once a client has attached."""

    def __init__(self, server: DebugServer, listening: re.Pattern, out_dir: Path, workers: int):
        self.debug = server
        self._args = (listening, out_dir, workers)

    def started(self) -> WebServer:
        return WebServer(self.debug, *self._args)

    def stop(self) -> None:
        self.debug.stop()

    def __enter__(self) -> _Pending:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class PlainServer:
    """A server started with no debugger at all (``python -m gunicorn ...``), to attach by pid;
    the same face as DebugServer where WebServer uses one."""

    address = None

    def __init__(self, argv: list[str], out_dir: Path, env: dict[str, str]):
        self.out_dir = out_dir
        self.stdout_path, self.stderr_path = out_dir / "server.out", out_dir / "server.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            env=dict(os.environ, PYTHONUNBUFFERED="1", **env))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return (f"--- server stdout ---\n{self.stdout_path.read_text(errors='replace')}"
                f"--- server stderr ---\n{self.stderr()}")

    def stop(self) -> None:
        children = []
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                kill_if_running(self.process)
        for child in children:
            try:
                child.kill()   # psutil checks the creation time, so a reused PID is left alone
                child.wait(5)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass


def _gunicorn_args(workers: int, timeout: int, extra: tuple[str, ...]) -> list[str]:
    return ["gunicorn", "-w", str(workers), "-b", f"{HOST}:0", "--chdir", str(WEB_APP.parent),
            "--timeout", str(timeout), "--graceful-timeout", "5", "--no-control-socket", *extra, "web_app:app"]


def plain_gunicorn(out_dir: Path, *, workers: int = 2, timeout: int = 120) -> WebServer:
    """``python -m gunicorn -w N web_app:app`` with no debugger, as a service runs in production."""
    out_dir = Path(out_dir)
    app_dir = out_dir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    server = PlainServer([sys.executable, "-m", *_gunicorn_args(workers, timeout, ())], out_dir,
                         {"WEB_APP_DIR": str(app_dir)})
    try:
        return WebServer(server, _GUNICORN_LISTENING, app_dir, workers)
    except BaseException:
        server.stop()
        raise


def gunicorn(out_dir: Path, *, workers: int = 2, wait_for_client: bool = False, timeout: int = 120,
             extra: tuple[str, ...] = (), env: dict[str, str] | None = None, options: tuple[str, ...] = ()):
    """``python -m fastattach --listen 127.0.0.1:0 -m gunicorn -w N web_app:app``.

    ``timeout`` is gunicorn's worker timeout: a worker held at a breakpoint sends the master
    no heartbeat and is killed after it (docs/servers.md), so tests that stop give it room."""
    return _start(_gunicorn_args(workers, timeout, extra), _GUNICORN_LISTENING, Path(out_dir), workers=workers,
                  wait_for_client=wait_for_client, env=env, options=options)


def uvicorn(out_dir: Path, port: int, *, workers: int = 2, wait_for_client: bool = False,
            extra: tuple[str, ...] = (), env: dict[str, str] | None = None, options: tuple[str, ...] = ()):
    """``python -m fastattach --listen 127.0.0.1:0 -m uvicorn --workers N web_app:asgi``.

    uvicorn's supervisor pings each worker (``--timeout-worker-healthcheck``, default 5 s) and
    kills one that does not answer: a worker held at a breakpoint, all its threads stopped,
    does not (docs/servers.md), so tests that stop pass a longer one in ``extra``."""
    args = ["uvicorn", "--workers", str(workers), "--host", HOST, "--port", str(port),
            "--app-dir", str(WEB_APP.parent), "--no-access-log", *extra, "web_app:asgi"]
    return _start(args, _UVICORN_LISTENING, Path(out_dir), workers=workers, wait_for_client=wait_for_client,
                  env=env, options=options)

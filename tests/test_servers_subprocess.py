"""Real servers with workers, each worker debugged in a session of its own (issue 11, point 3).

``python -m fastattach --listen 127.0.0.1:0 --wait-for-client -m gunicorn -w 2`` (workers forked
by the master) and ``-m uvicorn --workers 2`` (workers spawned: new interpreters, reached
through fastattach-subprocess.pth), on tests/targets/web_app.py. The master's client declares
``supportsStartDebuggingRequest`` and attaches with ``subProcess`` at its default (on); it is
sent ``startDebugging`` for every worker, attaches to each with the configuration it was given,
and sets a breakpoint in the view there. Then a request to each worker stops in that worker's
own session, never in the master's; a worker killed and respawned is announced again and its
replacement stops too. Every message of every session is checked against the DAP schema.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from _e2e import Stop, free_port, marker_line
from _servers import VIEW_LINE_MARK, WEB_APP, gunicorn, http_get, uvicorn
from conftest import wait_until
from dap_schema import assert_valid

from fastattach.net.client import DAPClient, DAPError

pytestmark = pytest.mark.timeout(240)

VIEW_LINE = marker_line(WEB_APP, VIEW_LINE_MARK)
SERVERS = ["gunicorn", "uvicorn"]


def start(kind: str, tmp_path):
    if kind == "gunicorn":
        return gunicorn(tmp_path, wait_for_client=True)
    # A worker held at a breakpoint answers no health check: give it room (docs/servers.md).
    return uvicorn(tmp_path, free_port(), wait_for_client=True, extra=("--timeout-worker-healthcheck", "120"))


def attach_master(address) -> DAPClient:
    client = DAPClient.connect(*address, timeout=20)
    client.initialize(supportsStartDebuggingRequest=True)
    client.attach(justMyCode=True)
    return client


class Worker:
    """A worker's own session, opened from the configuration its startDebugging carried."""

    def __init__(self, configuration: dict):
        self.pid = configuration["subProcessId"]
        connect = configuration["connect"]
        self.client = DAPClient.connect(connect["host"], connect["port"], timeout=20)
        self.client.attach(breakpoints={str(WEB_APP): [{"line": VIEW_LINE}]},
                           **{k: v for k, v in configuration.items() if k != "request"})


def announced_workers(master: DAPClient, count: int) -> list[Worker]:
    """The next ``count`` workers the master's client is told about, each attached to.

    The master runs under --wait-for-client, yet no worker stops at an entry: gunicorn, an
    installed package, makes the fork, and a spawned worker's main is multiprocessing's
    (docs/debugpy-compat.md, "Entry"). stop_in_each_worker would see such a stop: it
    requires the first stop of each worker to be the view's breakpoint."""
    workers = []
    for _ in range(count):
        request = master.wait_request("startDebugging", timeout=90)
        assert request["arguments"]["request"] == "attach"
        master.respond(request)
        workers.append(Worker(request["arguments"]["configuration"]))
    return workers


def wait_stop_in_one_of(workers: list[Worker], timeout: float = 60.0) -> tuple[Worker, Stop]:
    deadline = time.monotonic() + timeout
    while True:
        for worker in workers:
            try:
                body = worker.client.wait_event("stopped", timeout=0.02)["body"]
            except DAPError:
                continue
            frame = worker.client.top_frame(body["threadId"])
            return worker, Stop(body["threadId"], body.get("reason", ""), frame["line"], frame["name"], frame["id"],
                                frame.get("source", {}).get("path", ""), body)
        if time.monotonic() > deadline:
            raise AssertionError(f"no worker session stopped within {timeout} s")
        time.sleep(0.01)   # a closed session answers at once


def stop_in_each_worker(web, workers: list[Worker]) -> dict[int, dict]:
    """A request per worker, each stopped at the view's breakpoint in its worker's session
    (a worker held there takes no other request), then continued: {pid: answer}."""
    answers: dict[int, dict] = {}
    threads, stops = [], []
    for n in range(len(workers)):
        def get(n=n):
            answer = http_get(web.port, f"/request-{n}")
            answers[answer["pid"]] = answer

        thread = threading.Thread(target=get, daemon=True)
        thread.start()
        threads.append(thread)
        worker, stop = wait_stop_in_one_of([w for w in workers if w not in [s[0] for s in stops]])
        assert (stop.reason, stop.line) == ("breakpoint", VIEW_LINE)
        assert worker.client.evaluate("os.getpid()", stop.frame_id) == str(worker.pid)
        assert worker.client.evaluate("path", stop.frame_id) == repr(f"/request-{n}")
        stops.append((worker, stop))
    for worker, stop in stops:
        worker.client.request("continue", {"threadId": stop.thread_id})
    for thread in threads:
        thread.join(60)
    return answers


def finish(web, master: DAPClient, workers: list[Worker]) -> None:
    assert not master.events("stopped"), "the master's session saw a worker's breakpoint"
    master.disconnect()
    for worker in workers:
        worker.client.close()
        assert_valid(worker.client.transcript)
    assert_valid(master.transcript)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_request_to_each_worker_stops_in_that_workers_own_session(kind, tmp_path):
    # GIVEN the server under fastattach, its master's client attached with subProcess on
    with start(kind, tmp_path) as pending:
        master = attach_master(pending.debug.address)
        web = pending.started()
        # WHEN the server starts its two workers: each is announced by startDebugging, and
        # the client attaches to each with a breakpoint in the view
        workers = announced_workers(master, 2)
        pids = web.wait_workers()
        assert {w.pid for w in workers} == pids
        # THEN a request to each worker stops in that worker's session, and is answered once continued
        answers = stop_in_each_worker(web, workers)
        assert set(answers) == pids
        # AND when the server shuts down (SIGTERM to the master, which stops its workers),
        # each worker's session ends: a gunicorn worker exits, with exited and terminated; a
        # uvicorn worker, once shut down, raises the SIGTERM it caught again and dies of it,
        # so nothing is left in it to say so, and its connection just closes
        web.debug.process.terminate()
        for worker in workers:
            if kind == "gunicorn":
                worker.client.wait_event("exited", timeout=60)
                worker.client.wait_event("terminated", timeout=60)
            else:
                wait_until(lambda w=worker: w.client.closed, timeout=60, what="the worker's session to close")
        finish(web, master, workers)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_worker_killed_and_respawned_under_a_client_is_debugged(kind, tmp_path):
    # GIVEN both workers debugged in their own sessions
    with start(kind, tmp_path) as pending:
        master = attach_master(pending.debug.address)
        web = pending.started()
        workers = announced_workers(master, 2)
        pids = web.wait_workers()
        # WHEN one worker is killed (SIGKILL) and the server starts a new one
        killed = next(w for w in workers if w.pid == min(pids))
        os.kill(killed.pid, signal.SIGKILL)
        # THEN the new worker is announced too, and its session opens
        (replacement,) = announced_workers(master, 1)
        assert replacement.pid not in pids
        # AND the killed worker's session is gone (a SIGKILLed process says nothing more)
        try:
            killed.client.wait_event("terminated", timeout=30)
        except DAPError:
            assert killed.client.closed
        survivors = [w for w in workers if w is not killed] + [replacement]
        assert web.wait_workers(without={killed.pid}) == {w.pid for w in survivors}
        # AND a request to each worker, the new one included, stops in its own session
        answers = stop_in_each_worker(web, survivors)
        assert replacement.pid in answers
        finish(web, master, survivors + [killed])


@pytest.mark.parametrize("kind", SERVERS)
def test_workers_serve_when_the_client_attaches_to_none_of_them(kind, tmp_path):
    # GIVEN a master's client that handles neither startDebugging nor debugpyAttach (as Emacs
    # dap-mode 0.7): every worker waits the grace period for a client that never comes.
    # uvicorn's supervisor kills a worker that misses its health check (5 s by default, no
    # more than the grace period plus a start), so it gets a longer one (docs/servers.md).
    extra = ("--timeout-worker-healthcheck", "30") if kind == "uvicorn" else ()
    pending = (gunicorn(tmp_path, wait_for_client=True) if kind == "gunicorn"
               else uvicorn(tmp_path, free_port(), wait_for_client=True, extra=extra))
    with pending:
        master = DAPClient.connect(*pending.debug.address, timeout=20)
        master.attach()
        web = pending.started()
        # WHEN the workers start, THEN each is announced, runs on after the grace period, and serves
        pids = web.wait_workers(timeout=90)
        announced = {event["body"]["subProcessId"] for event in master.events("debugpyAttach")}
        assert pids <= announced
        assert web.held_by_each_worker() == pids
        master.disconnect()
        assert_valid(master.transcript)


def test_uvicorns_health_check_kills_a_worker_held_at_a_breakpoint(tmp_path):
    # GIVEN uvicorn with its default health check (5 s), both workers debugged
    with uvicorn(tmp_path, free_port(), wait_for_client=True) as pending:
        master = attach_master(pending.debug.address)
        web = pending.started()
        workers = announced_workers(master, 2)
        pids = web.wait_workers()
        # WHEN a request stops at the view's breakpoint in one worker and nobody resumes it
        answers = []
        threading.Thread(target=lambda: answers.append(_get_or_error(web.port)), daemon=True).start()
        held, stop = wait_stop_in_one_of(workers)
        assert stop.line == VIEW_LINE
        # THEN the supervisor, whose health check the stopped worker no longer answers (all its
        # threads are stopped), kills it and starts another (docs/servers.md)
        (replacement,) = announced_workers(master, 1)
        assert replacement.pid not in pids
        wait_until(lambda: held.client.closed, timeout=60, what="the killed worker's session to close")
        assert f"Child process [{held.pid}] died" in web.debug.stderr()
        survivors = [w for w in workers if w is not held] + [replacement]
        assert web.wait_workers(without={held.pid}) == {w.pid for w in survivors}
        finish(web, master, survivors + [held])


def _get_or_error(port: int):
    try:
        return http_get(port, "/held-at-a-breakpoint")
    except OSError as error:
        return error


@pytest.mark.parametrize("kind", SERVERS)
def test_production_mode_never_stops_a_worker(kind, tmp_path):
    # GIVEN the server under --production, each worker's session with a breakpoint in the view
    # (a spawned uvicorn worker gets the master's options through FASTATTACH_SUBPROCESS)
    pending = (gunicorn(tmp_path, wait_for_client=True, options=("--production",)) if kind == "gunicorn"
               else uvicorn(tmp_path, free_port(), wait_for_client=True, options=("--production",)))
    with pending:
        master = attach_master(pending.debug.address)
        web = pending.started()
        workers = announced_workers(master, 2)
        pids = web.wait_workers()
        # WHEN requests run through the view in every worker
        served = {http_get(web.port, f"/{n}", timeout=30)["pid"] for n in range(10)}
        assert served <= pids
        assert web.held_by_each_worker() == pids
        # THEN no worker stopped: each hit became a snapshot in that worker's own session
        def received(worker: Worker, event: str) -> list[dict]:
            return [m for direction, m, _ in list(worker.client.transcript)
                    if direction == "recv" and m.get("event") == event]

        for worker in workers:
            if worker.pid in served:
                wait_until(lambda w=worker: received(w, "fastattach.snapshot"), timeout=30, what="a snapshot")
                assert received(worker, "fastattach.snapshot")[0]["body"]["line"] == VIEW_LINE
            assert not received(worker, "stopped")
        finish(web, master, workers)

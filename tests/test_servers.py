"""Real servers with workers under ``python -m fastattach`` (issue 11, point 3): fork safety.

gunicorn (sync workers, forked by the master) and uvicorn ``--workers 2`` (workers started
with multiprocessing's spawn), each on the plain app in tests/targets/web_app.py, with a
real client on the master's session. Each test proves that every live worker serves
requests (one held request per worker at once, so the answers name every worker), that a
worker carries nothing of the master's session (/state), and that the master's session
still works afterwards: the client pauses the master and evaluates in it.

These run with ``subProcess: false``, the fork-safety contract alone; the child sessions
(``subProcess`` on) are tests/test_servers_subprocess.py.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
from _e2e import free_port, marker_line, wait_stop
from _servers import VIEW_LINE_MARK, WEB_APP, gunicorn, http_get, plain_gunicorn, uvicorn
from conftest import wait_until
from dap_schema import assert_valid
from targets.attach_harness import LINUX_X86_64_ONLY

from fastattach.attach import attach
from fastattach.net.client import DAPClient

pytestmark = pytest.mark.timeout(180)

VIEW_LINE = marker_line(WEB_APP, VIEW_LINE_MARK)
SERVERS = ["gunicorn", "uvicorn"]


def start(kind: str, tmp_path, *, wait_for_client: bool):
    if kind == "gunicorn":
        return gunicorn(tmp_path, wait_for_client=wait_for_client)
    return uvicorn(tmp_path, free_port(), wait_for_client=wait_for_client)


def attach_to_master(address) -> DAPClient:
    client = DAPClient.connect(*address, timeout=20)
    # justMyCode off: the master only ever runs the server's code, which a pause stops in
    client.attach(breakpoints={str(WEB_APP): [{"line": VIEW_LINE}]}, subProcess=False, justMyCode=False)
    return client


def assert_clean_worker(found: dict, master_pid: int) -> None:
    """What a worker must find in itself: nothing of the master's session."""
    assert found["ppid"] == master_pid
    assert found["tools"] == {}, "a sys.monitoring tool of the master's session is in the worker"
    assert found["settrace"] == "None"
    assert found["listener"] == "None"
    assert not [name for name in found["threads"] if "fastattach" in name or "pydevd" in name]


def assert_each_worker_clean(web, pids: set[int]) -> None:
    answers = web.held_answers()
    assert {found["pid"] for found in answers} == pids
    for found in answers:
        assert_clean_worker(found, web.debug.process.pid)


def assert_master_session_works(client: DAPClient, master_pid: int) -> None:
    """The master never ran the view, so it never stopped; pausing it still works."""
    assert client.events("stopped") == [], "the master's session stopped in a worker's view"
    threads = client.request("threads")["body"]["threads"]
    main = [t for t in threads if t["name"] == "MainThread"]
    assert len(main) == 1, threads
    client.request("pause", {"threadId": main[0]["id"]})
    stop = wait_stop(client, timeout=30)
    assert stop.reason == "pause"
    assert client.evaluate("__import__('os').getpid()", stop.frame_id) == str(master_pid)
    client.request("continue", {"threadId": stop.thread_id})
    client.disconnect()
    assert_valid(client.transcript)


@pytest.mark.parametrize("kind", SERVERS)
def test_workers_serve_with_no_client_and_then_a_client_attaches_to_the_master(kind, tmp_path):
    # GIVEN the server under fastattach with no client
    with start(kind, tmp_path, wait_for_client=False) as web:
        # THEN both workers serve, and neither holds anything of the master's listener
        pids = web.wait_workers()
        assert web.held_by_each_worker() == pids
        assert_each_worker_clean(web, pids)
        # AND the master still listens: a client attaches to it and pauses it
        client = attach_to_master(web.debug.address)
        assert web.held_by_each_worker() == pids
        assert_master_session_works(client, web.debug.process.pid)


@pytest.mark.parametrize("kind", SERVERS)
def test_workers_started_under_a_client_serve_through_a_breakpoint_in_the_view(kind, tmp_path):
    # GIVEN a client attached to the master, with a breakpoint in the view, before the
    # server has started any worker (--wait-for-client holds the master until then)
    with start(kind, tmp_path, wait_for_client=True) as pending:
        client = attach_to_master(pending.debug.address)
        web = pending.started()
        # WHEN the workers are started and get requests
        pids = web.wait_workers()
        answers = [http_get(web.port, f"/{n}") for n in range(20)]
        # THEN every request is served at full speed, the breakpoint notwithstanding
        assert {a["pid"] for a in answers} <= pids
        assert web.held_by_each_worker() == pids
        assert_each_worker_clean(web, pids)
        # AND the master's session is untouched
        assert_master_session_works(client, web.debug.process.pid)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_worker_killed_under_a_client_is_replaced_and_the_new_one_serves(kind, tmp_path):
    # GIVEN a client attached to the master with a breakpoint in the view, and both workers up
    with start(kind, tmp_path, wait_for_client=True) as pending:
        client = attach_to_master(pending.debug.address)
        web = pending.started()
        pids = web.wait_workers()
        # WHEN one worker is killed (SIGKILL) and the master starts a new one while the
        # client is attached (gunicorn forks it from the master, uvicorn spawns it)
        killed = min(pids)
        os.kill(killed, signal.SIGKILL)
        new_pids = web.wait_workers(without={killed})
        # THEN the new worker serves, through the view's breakpoint, and is clean
        (replacement,) = new_pids - pids
        assert web.held_by_each_worker() == new_pids
        assert_each_worker_clean(web, new_pids)
        # AND the master's session is untouched
        assert_master_session_works(client, web.debug.process.pid)


def requests_until(stopped: threading.Event, port: int, answers: list) -> threading.Thread:
    """GET / on new connections until ``stopped`` is set (bounded); a failed one ends the loop."""
    def run():
        for _ in range(200):   # bounded: a worker that has no breakpoint answers at once
            try:
                answers.append(http_get(port, "/"))
            except OSError as error:   # the worker holding it was killed
                answers.append(error)
                return
            if stopped.is_set():
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@LINUX_X86_64_ONLY
def test_attach_by_pid_to_one_worker_of_a_server_started_without_a_debugger(tmp_path):
    # GIVEN gunicorn with two workers, started with no debugger at all
    with plain_gunicorn(tmp_path) as web:
        pids = web.wait_workers()
        worker = min(pids)
        # WHEN a client attaches by pid to one worker, with a breakpoint in the view
        client = DAPClient.connect(*attach(worker, ("127.0.0.1", 0), timeout=30), timeout=20)
        client.attach(breakpoints={str(WEB_APP): [{"line": VIEW_LINE}]}, subProcess=False)
        stopped, answers = threading.Event(), []
        requester = requests_until(stopped, web.port, answers)
        # THEN the request that worker takes stops there, in that worker
        stop = wait_stop(client, timeout=60)
        assert stop.line == VIEW_LINE
        assert client.evaluate("os.getpid()", stop.frame_id) == str(worker)
        stopped.set()
        # AND the other worker serves on while this one is held
        assert http_get(web.port, "/state")["pid"] == (pids - {worker}).pop()
        # AND once continued, the held request is answered by that worker
        client.set_breakpoints(str(WEB_APP), [])
        client.request("continue", {"threadId": stop.thread_id})
        requester.join(60)
        assert answers[-1]["pid"] == worker
        client.disconnect()
        assert_valid(client.transcript)
        # AND both workers still serve
        assert web.held_by_each_worker() == pids


@LINUX_X86_64_ONLY
def test_gunicorns_timeout_kills_a_worker_held_at_a_breakpoint(tmp_path):
    # GIVEN gunicorn with its worker timeout short, and a client attached by pid to one worker
    with plain_gunicorn(tmp_path, timeout=2) as web:
        pids = web.wait_workers()
        worker = min(pids)
        client = DAPClient.connect(*attach(worker, ("127.0.0.1", 0), timeout=30), timeout=20)
        client.attach(breakpoints={str(WEB_APP): [{"line": VIEW_LINE}]}, subProcess=False)
        stopped, answers = threading.Event(), []
        requester = requests_until(stopped, web.port, answers)
        # WHEN a request stops at a breakpoint in that worker and nobody resumes it
        stop = wait_stop(client, timeout=60)
        assert client.evaluate("os.getpid()", stop.frame_id) == str(worker)
        stopped.set()
        # THEN the master kills the held worker, which sent it no heartbeat (docs/servers.md)
        new_pids = web.wait_workers(without={worker}, timeout=90)
        assert f"WORKER TIMEOUT (pid:{worker})" in web.debug.stderr()
        # AND the client's session ends
        # (SIGABRT, then SIGKILL a second later: nothing is left in the worker to send
        # terminated, so a direct connection just closes; `fastattach connect` says terminated)
        wait_until(lambda: client.closed, timeout=30, what="the dead worker's connection to close")
        requester.join(60)
        assert isinstance(answers[-1], OSError), answers[-1]
        client.close()
        assert_valid(client.transcript)
        # AND the replacement worker serves
        assert web.held_by_each_worker() == new_pids


def test_gunicorn_workers_recycled_by_max_requests_under_a_client_serve(tmp_path):
    # GIVEN gunicorn recycling each worker after 5 requests, under a client with a breakpoint
    # in the view: every replacement is forked by the master while the client is attached
    with gunicorn(tmp_path, wait_for_client=True, extra=("--max-requests", "5")) as pending:
        client = attach_to_master(pending.debug.address)
        web = pending.started()
        first = web.wait_workers()
        # WHEN enough requests go through the view for every worker to be recycled twice over
        served = {http_get(web.port, f"/{n}")["pid"] for n in range(30)}
        # THEN every request was answered, by workers of several generations (a worker
        # serves at most 5 before it is replaced)
        assert len(served) >= 30 // 5 and served - first, served
        now = web.wait_workers()
        assert_each_worker_clean(web, now)
        assert_master_session_works(client, web.debug.process.pid)

"""Fork safety (issue 11, point 1): a forked child never inherits the parent's session.

Each test runs tests/targets/forking.py under ``python -m fastattach`` and reads what each
child found in itself: no sys.monitoring tool or event of ours, no pydevd, no listener and
not the parent's port, none of our threads, and its own switch interval; and that the child
got through child_work(), where the parent's client has a breakpoint, and exited. The
parent's session is checked afterwards: its client still stops it at that breakpoint.
"""

from __future__ import annotations

import json
import re

import pytest
from _e2e import DebugServer, marker_line, target, wait_stop
from dap_schema import assert_valid

from fastattach.net.client import DAPClient

pytestmark = pytest.mark.timeout(120)

FORKING = target("forking.py")
CHILD_LINE = marker_line(FORKING, "child-breakpoint")
HELD_LINE = marker_line(FORKING, "held-breakpoint")


def child_reports(out_dir) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out_dir.glob("child-*.json"))]


def assert_clean_child(found: dict, parent_port: int) -> None:
    """What a child must find in itself after the fork, whatever the parent's client did."""
    assert found["calls"] == [0, 2, 4]
    assert found["tools"] == {}, "a sys.monitoring tool survived the fork"
    assert found["debugger_events"] == 0
    assert found["settrace"] == "None"
    assert found["global_debugger"] == "None"
    assert found["host"] == "None"
    assert parent_port not in found["listening_ports"], "the child holds the parent's port"
    assert not [name for name in found["threads"] if "fastattach" in name or "pydevd" in name]


def start(mode: str, tmp_path, *, wait_for_client: bool) -> DebugServer:
    reports = tmp_path / "reports"
    reports.mkdir()
    server = DebugServer("fastattach", FORKING, mode, str(reports), out_dir=tmp_path,
                         wait_for_client=wait_for_client)
    server.reports = reports
    return server


def attach(server: DebugServer, **attach_args) -> DAPClient:
    client = DAPClient.connect(*server.address, timeout=20)
    client.attach(breakpoints={str(FORKING): [{"line": CHILD_LINE}, {"line": HELD_LINE}]},
                  subProcess=False, **attach_args)
    return client


def assert_parent_session_works(server: DebugServer, client: DAPClient) -> None:
    """The parent's own loop still stops at the breakpoint the children ran through."""
    server.wait_for_stdout(r"^PARENT done")
    stop = wait_stop(client, timeout=30)
    assert stop.line == CHILD_LINE
    assert client.evaluate("os.getpid()", stop.frame_id) == str(server.process.pid)
    (server.reports / "stop").touch()
    client.request("setBreakpoints", {"source": {"path": str(FORKING)}, "breakpoints": []})
    client.request("continue", {"threadId": stop.thread_id})
    server.wait_for_stdout(r"^PARENT stopped")
    client.disconnect()
    assert_valid(client.transcript)


@pytest.mark.parametrize("mode", ["fork", "mp-fork"])
def test_a_child_forked_without_a_client_inherits_nothing(mode, tmp_path):
    # GIVEN a process listening with no client, WHEN it forks
    with start(mode, tmp_path, wait_for_client=False) as server:
        server.wait_for_stdout(r"^PARENT done")
        # THEN the child dropped the listener and exited
        assert "CHILD EXIT 0" in server.stdout()
        (found,) = child_reports(server.reports)
        assert_clean_child(found, server.address[1])
        assert found["listener"] == "None"
        # AND the parent still listens: a client attaches and stops it
        client = DAPClient.connect(*server.address, timeout=20)
        client.attach(breakpoints={str(FORKING): [{"line": CHILD_LINE}]}, subProcess=False)
        assert_parent_session_works(server, client)


@pytest.mark.parametrize("mode", ["fork", "mp-fork", "pool-fork", "pool-spawn", "pool-forkserver"])
def test_a_child_forked_under_a_client_runs_through_its_breakpoint(mode, tmp_path):
    # GIVEN a client attached with a breakpoint in the function the children run
    with start(mode, tmp_path, wait_for_client=True) as server:
        client = attach(server)
        # WHEN the parent forks (or a pool forks or spawns its workers)
        server.wait_for_stdout(r"^PARENT done", timeout=60)
        # THEN every child ran through the breakpoint at full speed and exited
        if mode.startswith("pool-"):
            pool = json.loads(re.search(r"^POOL (.*)$", server.stdout(), re.MULTILINE).group(1))
            assert pool == [[0, 2, 4]] * 4
        else:
            assert "CHILD EXIT 0" in server.stdout()
        reports = child_reports(server.reports)
        assert reports
        for found in reports:
            assert_clean_child(found, server.address[1])
        # AND the parent's session is untouched
        assert_parent_session_works(server, client)


def test_a_fork_from_a_thread_held_at_a_breakpoint(tmp_path):
    # GIVEN a thread of the parent stopped at a breakpoint
    with start("held", tmp_path, wait_for_client=True) as server:
        client = attach(server)
        stop = wait_stop(client, timeout=30)
        assert stop.line == HELD_LINE
        # WHEN the client makes that very thread fork (the child starts inside pydevd's wait loop)
        exit_code = client.evaluate("fork_and_report('held')", stop.frame_id)
        # THEN the child did not wait for a resume nobody will send: it ran on and exited
        assert exit_code == "0"
        (found,) = child_reports(server.reports)
        assert_clean_child(found, server.address[1])
        # AND the parent's thread is still held, and resumes when told
        assert client.evaluate("threading.current_thread().name", stop.frame_id) == "'held'"
        client.request("continue", {"threadId": stop.thread_id})
        assert_parent_session_works(server, client)


def test_the_fork_handler_restores_what_the_session_changed_in_a_child(tmp_path):
    # GIVEN a client attached (its session shortens the switch interval), WHEN the parent forks
    with start("fork", tmp_path, wait_for_client=True) as server:
        client = attach(server)
        server.wait_for_stdout(r"^PARENT done")
        (found,) = child_reports(server.reports)
        # THEN the child has the interpreter's switch interval and its own breakpoint hook back
        assert found["switch_interval"] == pytest.approx(0.005)
        assert found["breakpointhook"] == "sys"
        assert found["listener"] == "None"
        assert_parent_session_works(server, client)


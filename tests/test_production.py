"""Production mode in this very process, so the `fastattach.probe` records reach caplog.

The debugger is the real one: fastattach.listen() in the test process, a real DAP client
over loopback TCP, pydevd behind the relay, the C trampolines, and worker threads that
run code from a module written to tmp_path.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import textwrap
import threading
import time

import pytest
from conftest import wait_until
from dap_schema import assert_valid

import fastattach
from fastattach import _api, _options
from fastattach.net.client import DAPClient, DAPError

MODULE = textwrap.dedent("""
    import threading

    def handle(request_id, payload):
        big = "x" * 200_000
        numbers = list(range(5_000))
        nested = {"payload": payload, "more": [numbers, numbers]}
        result = request_id * 2  # SNAP
        return result

    def serve(n, payload):
        total = 0
        for i in range(n):
            total += handle(i, payload)
        return total

    def log_loop(n):
        total = 0
        for i in range(n):
            total += i  # LOG
        return total
""")


def marker(source: str, name: str) -> int:
    return next(n for n, text in enumerate(source.splitlines(), 1) if text.rstrip().endswith(f"# {name}"))


@pytest.fixture
def options():
    """Restore every option a test changed, and turn production mode off again."""
    saved = _api.session().options
    yield
    fastattach.configure(**saved)


@pytest.fixture
def module(tmp_path):
    path = tmp_path / "prod_target.py"
    path.write_text(MODULE)
    spec = importlib.util.spec_from_file_location("prod_target", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, str(path)


@pytest.fixture
def session(options):
    """listen() here, a connected DAP client; stop() afterwards (conftest checks monitoring is clean)."""
    clients = []

    def open_session(**config):
        fastattach.configure(**config)
        host, port = fastattach.listen(("127.0.0.1", 0))
        client = DAPClient.connect(host, port)
        clients.append(client)
        return client

    yield open_session
    for client in clients:
        client.close()
    # pydevd's end of the socketpair outlives an in-process stop() until GC finds it
    # unclosed (a ResourceWarning); close it here, this process keeps running.
    gate = _api.session().gate
    writer = getattr(gate.py_db, "writer", None) if gate is not None else None
    pydevd_socket = getattr(writer, "sock", None)
    fastattach.stop()
    if pydevd_socket is not None:
        pydevd_socket.close()


def run_in_thread(target, *args, timeout=60.0):
    """Run target in a worker thread; the worker must finish (a suspended thread would not)."""
    box = {}

    def worker():
        box["result"] = target(*args)

    thread = threading.Thread(target=worker, name="prod-worker")
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the worker never finished: a thread was suspended"
    return box["result"]


def probe_records(caplog, kind):
    return [r for r in caplog.records if r.name == "fastattach.probe" and getattr(r, "probe_kind", None) == kind]


def test_production_breakpoints_never_suspend_and_snapshots_are_capped(session, module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    # Room for the top frame's locals beside a stack whose file names are as long as the
    # checkout's and the temporary directory's paths make them; three frames' locals still overflow.
    max_bytes = 1536
    # No time budget: on a loaded machine the wall-clock time of a capture can trip it, and this
    # test is about the size cap (the time budget has tests of its own).
    client = session(production=True, snapshot_max_bytes=max_bytes, snapshots_per_second=1000.0,
                     budget_cooldown=0.2, probe_cpu_fraction=0.0)
    line = marker(MODULE, "SNAP")
    result = client.attach(breakpoints={path: [{"line": line}]})
    assert result[path][0]["verified"]

    assert run_in_thread(mod.serve, 200, {"user": "alice"}) == sum(i * 2 for i in range(200))

    wait_until(lambda: len(probe_records(caplog, "snapshot")) >= 5, what="snapshots in the log")
    time.sleep(0.3)
    events = client.events()
    assert not [e for e in events if e["event"] == "stopped"], "production mode must never stop a thread"
    snapshots = [e["body"] for e in events if e["event"] == "fastattach.snapshot"]
    outputs = [e["body"]["output"] for e in events if e["event"] == "output"
               and e["body"]["output"].startswith("fastattach snapshot: ")]
    assert snapshots and outputs
    for body in snapshots:
        assert len(json.dumps(body, separators=(",", ":")).encode()) <= max_bytes
        assert body["line"] == line and body["stack"][0]["name"] == "handle"
        assert body["frames"][0]["locals"]["request_id"].isdigit()
        assert body["truncated"] is True   # the locals of three frames do not fit in 1.5 KB
        assert len(body["frames"][0]["locals"].get("big", "")) <= 200
    for text in outputs:
        assert len(text.encode()) <= max_bytes
    record = probe_records(caplog, "snapshot")[0]
    assert record.probe_line == line and record.probe_file.endswith("prod_target.py")
    assert record.probe_thread == "prod-worker"
    assert record.probe_snapshot["frames"][0]["name"] == "handle"
    assert len(json.dumps(record.probe_snapshot, separators=(",", ":"))) <= max_bytes
    assert_valid(client.transcript)


def test_production_refuses_pause_and_stepping_with_a_clear_message(session, module):
    mod, path = module
    client = session(production=True)
    client.attach(breakpoints={path: [{"line": marker(MODULE, "SNAP")}]}, exception_filters=["uncaught"])
    threads = client.request("threads")["body"]["threads"]
    thread_id = threads[0]["id"]
    for command in ("pause", "next", "stepIn", "stepOut", "goto"):
        response = client.request(command, {"threadId": thread_id, "targetId": 1}, check=False)
        assert response["success"] is False, command
        assert "production mode" in response["message"] and "suspend" in response["message"]
    response = client.request("setFunctionBreakpoints", {"breakpoints": [{"name": "handle"}]}, check=False)
    assert response["success"] is False and "production mode" in response["message"]
    # Exception filters are dropped (and said so) rather than failing the client's configuration.
    assert client.wait_event("output", predicate=lambda e: "ignores exception breakpoints" in e["body"]["output"])
    run_in_thread(mod.serve, 20, None)
    assert not client.events("stopped")
    assert_valid(client.transcript)   # the refusals are well-formed DAP error responses


def test_production_snapshots_are_rate_limited_and_the_breakpoint_pauses(session, module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    client = session(production=True, snapshots_per_second=2.0, budget_cooldown=600.0, probe_cpu_fraction=0.0)
    client.attach(breakpoints={path: [{"line": marker(MODULE, "SNAP")}]})
    run_in_thread(mod.serve, 5_000, None)
    notice = client.wait_event("breakpoint", predicate=lambda e: not e["body"]["breakpoint"]["verified"])
    assert "snapshots/s" in notice["body"]["breakpoint"]["message"]
    assert_valid(client.transcript)   # the injected breakpoint event fits the schema
    snapshots = client.events("fastattach.snapshot")
    assert 1 <= len(snapshots) <= 2   # the bucket holds one second's worth: 2
    assert len(probe_records(caplog, "snapshot")) == len(snapshots)
    budget = _api.session().gate.budgets.budgets()[0]
    stats = budget.stats()
    assert budget.paused and stats["outputs"] == len(snapshots) and stats["hits"] < 5_000


def test_logpoints_in_production_go_to_the_client_and_the_log_within_budget(session, module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    client = session(production=True, logpoint_messages_per_second=10.0, budget_cooldown=600.0,
                     probe_cpu_fraction=0.0)
    client.attach(breakpoints={path: [{"line": marker(MODULE, "LOG"), "logMessage": "i={i} total={total}"}]})
    run_in_thread(mod.log_loop, 100_000)
    client.wait_event("breakpoint", predicate=lambda e: not e["body"]["breakpoint"]["verified"])
    wait_until(lambda: len(probe_records(caplog, "logpoint")) >= 10, what="logpoint records")
    records = probe_records(caplog, "logpoint")
    assert len(records) == 10
    assert records[0].getMessage() == "i=0 total=0" and records[0].probe_message == "i=0 total=0"
    assert [r.probe_line for r in records] == [marker(MODULE, "LOG")] * 10
    wait_until(lambda: len([e for e in client._events if e["event"] == "output"
                            and e["body"].get("category") == "stdout"]) >= 10, what="logpoint output events")
    messages = [e["body"]["output"] for e in client.events("output") if e["body"].get("category") == "stdout"]
    assert messages[:2] == ["i=0 total=0\n", "i=1 total=0\n"] and len(messages) == 10


def test_production_breakpoints_expire(session, module):
    mod, path = module
    client = session(production=True, production_expiry=0.5, snapshots_per_second=1000.0)
    client.attach(breakpoints={path: [{"line": marker(MODULE, "SNAP")}]})
    run_in_thread(mod.serve, 3, None)
    assert len(client.wait_event("fastattach.snapshot")["body"]["stack"]) >= 2
    expired = client.wait_event("breakpoint", predicate=lambda e: "expired" in e["body"]["breakpoint"]["message"])
    assert expired["body"]["breakpoint"]["verified"] is False
    client.events()
    budget = _api.session().gate.budgets.budgets()[0]
    hits = budget.stats()["hits"]
    run_in_thread(mod.serve, 1_000, None)
    assert budget.paused and budget.stats()["hits"] == hits, "an expired breakpoint must not run"
    assert not client.events("fastattach.snapshot")
    # Setting it again starts a new probe with a new expiry.
    client.set_breakpoints(path, [{"line": marker(MODULE, "SNAP")}])
    run_in_thread(mod.serve, 3, None)
    client.wait_event("fastattach.snapshot")


def test_configure_validates_budget_options(options):
    for name, bad in [("logpoint_messages_per_second", -1), ("condition_cpu_fraction", 2.0),
                      ("probe_cpu_fraction", 1.5), ("pydevd_condition_evaluations_per_second", -1),
                      ("snapshot_max_bytes", 10), ("production", "yes"), ("snapshot_output", "file"),
                      ("budget_cooldown", float("nan"))]:
        with pytest.raises(ValueError, match=name):
            fastattach.configure(**{name: bad})
    fastattach.configure(logpoint_messages_per_second=5, production=True)
    assert _api.get_option("logpoint_messages_per_second") == 5.0 and _api.get_option("production") is True
    assert set(_api.session().options) == set(_options.DEFAULTS)


def test_breakpoint_api_is_a_no_op_in_production(session):
    session(production=True).attach()
    # On a thread of its own: were it to suspend (as in debug mode), the join's bound fails the test.
    returned = run_in_thread(lambda: fastattach.breakpoint() or True, timeout=30)
    assert returned


def test_production_guard_refuses_suspension_inside_pydevd(session, module):
    """Even a path that reaches pydevd's set_suspend / do_wait_suspend does not park the thread."""
    mod, path = module
    client = session(production=True)
    client.attach()
    py_db = _api.session().gate.py_db
    seam = _api.session().host.seam
    before = seam.refused_suspends
    done = threading.Event()

    def stop_here():
        from _pydevd_bundle.pydevd_comm_constants import CMD_SET_BREAK

        thread = threading.current_thread()
        py_db.set_suspend(thread, CMD_SET_BREAK)
        py_db.do_wait_suspend(thread, __import__("sys")._getframe(), "line", None)
        done.set()

    run_in_thread(stop_here)
    assert done.is_set() and seam.refused_suspends == before + 2
    assert not client.events("stopped")
    with pytest.raises(DAPError):
        client.wait_event("stopped", timeout=0.5)


def test_request_filter_decisions(options):
    decide = _api.session().filter_request
    request = {"seq": 3, "type": "request", "command": "next", "arguments": {"threadId": 1}}
    assert decide(request) is None, "outside production mode everything is forwarded"
    fastattach.configure(production=True)
    assert "stepping is refused" in decide(request)
    assert "terminate is refused" in decide({"seq": 7, "type": "request", "command": "terminate"})
    assert decide({"seq": 8, "type": "request", "command": "disconnect",
                   "arguments": {"terminateDebuggee": True, "restart": False}}) == {
        "seq": 8, "type": "request", "command": "disconnect",
        "arguments": {"terminateDebuggee": False, "restart": False}}
    assert decide({"seq": 4, "type": "request", "command": "continue"}) is None
    assert decide({"seq": 5, "type": "request", "command": "setFunctionBreakpoints",
                   "arguments": {"breakpoints": []}}) is None
    rewritten = decide({"seq": 6, "type": "request", "command": "setExceptionBreakpoints",
                        "arguments": {"filters": ["uncaught", "raised"]}})
    assert rewritten == {"seq": 6, "type": "request", "command": "setExceptionBreakpoints",
                         "arguments": {"filters": []}}


def test_cli_budget_flags_map_to_configure_options():
    from fastattach import cli

    options = cli._parser().parse_args(["--listen", "0", "--production", "--logpoint-rate", "7",
                                        "--condition-cpu", "0.02", "--probe-cpu", "0.005",
                                        "--snapshot-max-bytes", "4096", "--condition-rate", "100",
                                        "--pydevd-condition-rate", "200",
                                        "--probe-expiry", "60", "-c", "pass"])
    assert cli.budget_options(options) == {
        "production": True, "logpoint_messages_per_second": 7.0, "condition_cpu_fraction": 0.02,
        "probe_cpu_fraction": 0.005, "condition_evaluations_per_second": 100.0,
        "pydevd_condition_evaluations_per_second": 200.0, "snapshot_max_bytes": 4096, "production_expiry": 60.0}
    ours, rest = cli._split_target(["--listen", "0", "--logpoint-rate", "7", "script.py", "--logpoint-rate", "x"])
    assert rest == ["script.py", "--logpoint-rate", "x"], "flags after the script are the script's"


def test_conditional_and_hit_counted_snapshots(session, module):
    mod, path = module
    client = session(production=True, snapshots_per_second=1000.0, probe_cpu_fraction=0.0)
    line = marker(MODULE, "SNAP")
    client.attach(breakpoints={path: [{"line": line, "condition": "request_id == 3"}]})
    run_in_thread(mod.serve, 10, None)
    snapshot = client.wait_event("fastattach.snapshot")["body"]
    assert snapshot["frames"][0]["locals"]["request_id"] == "3"
    # A hit condition counts with pydevd's counter: "== 4" is the fourth hit, request 3 again.
    client.set_breakpoints(path, [{"line": line, "hitCondition": "4"}])
    run_in_thread(mod.serve, 10, None)
    snapshot = client.wait_event("fastattach.snapshot")["body"]
    assert snapshot["frames"][0]["locals"]["request_id"] == "3"
    time.sleep(0.3)
    assert not client.events("fastattach.snapshot"), "each condition held exactly once"
    assert not client.events("stopped")

"""The seam into a real pydevd: installation, read-back, fallback, stop() and re-listen.

The debuggee code runs on worker threads of this process, and the client attaches with
stopAllThreadsOnSuspend=False, so a stop never parks the test's own thread.
"""

from __future__ import annotations

import dis
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from _e2e import kill_if_running

import fastattach
from fastattach import _api, _fasttrace
from fastattach.engine import gate as _gate
from fastattach.net.client import DAPClient

M = sys.monitoring
E = M.events


def hot(n):
    total = 0
    for i in range(n):
        total += i  # HOT LINE
        if i < 0:
            total = -1  # NEVER LINE
    return total


def _line_of(marker: str) -> int:
    with open(__file__) as source:
        for number, text in enumerate(source, 1):
            if text.rstrip().endswith("# " + marker):
                return number
    raise LookupError(marker)


HOT_LINE = _line_of("HOT LINE")
NEVER_LINE = _line_of("NEVER LINE")
THIS_FILE = os.path.abspath(__file__)


@pytest.fixture
def unlimited_condition_budget():
    """These tests are about the filter, not the budgets (tests/test_budget*.py): lift them."""
    unlimited = {"condition_evaluations_per_second": 0, "pydevd_condition_evaluations_per_second": 0,
                 "condition_cpu_fraction": 0, "probe_cpu_fraction": 0}
    saved = {name: _api.get_option(name) for name in unlimited}
    fastattach.configure(**unlimited)
    yield
    fastattach.configure(**saved)


@pytest.fixture
def session(unlimited_condition_budget):
    """An in-process listener with one attached client; stop() on the way out."""
    host, port = fastattach.listen(("127.0.0.1", 0))
    client = DAPClient.connect(host, port)
    try:
        yield client
    finally:
        client.close()
        fastattach.stop()


def attach(client, breakpoints):
    # Under pytest, pydevd's justMyCode counts this module as library code; the filter
    # under test does not depend on justMyCode (the e2e tests cover it with a real target).
    return client.attach(breakpoints={THIS_FILE: breakpoints}, stopAllThreadsOnSuspend=False, justMyCode=False)


def run_in_thread(func, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", func(*args)), daemon=True)
    thread.start()
    return thread, result


def registered_callback(event):
    current = M.register_callback(_gate.DEBUGGER_ID, event, None)
    M.register_callback(_gate.DEBUGGER_ID, event, current)
    return current


def test_pydevd_callbacks_are_wrapped_and_read_back(session):
    attach(session, [{"line": NEVER_LINE}])
    for event in (E.PY_START, E.LINE):
        callback = registered_callback(event)
        assert type(callback) is _fasttrace.Trampoline
        # Cython wraps pydevd's cdef callbacks in a `wrap` whose repr names the module.
        assert "pydevd_sys_monitoring" in repr(callback.target) + callback.target.__module__


def test_jump_is_armed_only_where_pydevd_listens_for_it(session):
    attach(session, [{"line": NEVER_LINE}])
    thread, _ = run_in_thread(hot, 10)
    thread.join(30)
    local = M.get_local_events(_gate.DEBUGGER_ID, hot.__code__)
    assert local & E.LINE, "pydevd line-traces breakpoint code"
    jump_callback = registered_callback(E.JUMP)
    # pydevd registers a JUMP callback on 3.12 only; without one, JUMP must not be armed.
    assert bool(local & E.JUMP) == (jump_callback is not None)
    assert (jump_callback is not None) == (sys.version_info < (3, 13))
    # pydevd arms PY_RESUME globally but never registers a callback for it (1.8.22).
    assert registered_callback(E.PY_RESUME) is None
    assert M.get_events(_gate.DEBUGGER_ID) & E.PY_START
    assert not M.get_events(_gate.DEBUGGER_ID) & E.PY_RESUME


def test_breakpoint_in_a_hot_function_costs_pydevd_nothing(session):
    attach(session, [{"line": NEVER_LINE}])
    tracer = _api.session().gate.tracer
    thread, result = run_in_thread(hot, 100_000)
    thread.join(30)
    assert result["value"] == sum(range(100_000))
    stats = tracer.stats()
    assert stats["line_forward"] == 0
    assert 0 < stats["line_disable"] < 50, stats


def test_false_condition_never_reaches_pydevd_and_a_true_one_stops(session):
    # Long enough that the few milliseconds of slow mode after pydevd's own calls
    # (thread start, configuration) cannot cover the whole loop.
    attach(session, [{"line": HOT_LINE, "condition": "i == 150_000"}])
    tracer = _api.session().gate.tracer
    thread, result = run_in_thread(hot, 200_000)
    stopped = session.wait_stopped(20)
    frame = session.top_frame(stopped["threadId"])
    assert (frame["line"], session.evaluate("i", frame["id"])) == (HOT_LINE, "150000")
    session.request("continue", {"threadId": stopped["threadId"]})
    thread.join(30)
    assert result["value"] == sum(range(200_000))
    stats = tracer.stats()
    assert stats["condition_false"] >= 100_000
    # Behind a real pydevd too, C computed every evaluation from the frame's variables
    # (engine/conditions.py), not with eval.
    assert stats["condition_fast"] == stats["condition_false"] + stats["condition_forward"]


class _WrappedMonitoring:
    """Another tool's stand-in for sys.monitoring in pydevd's module: it forwards everything."""

    def __getattr__(self, name):
        return getattr(sys.monitoring, name)


def test_seam_mismatch_warns_once_naming_it_and_pydevd_runs_unmodified(monkeypatch, caplog,
                                                                      unlimited_condition_budget):
    # GIVEN a pydevd whose monitoring module's `monitor` is not sys.monitoring (another tool
    # wrapped it first), so the filter cannot be put in front of it
    import debugpy.server.api  # noqa: F401  (loads the vendored pydevd and its monitoring module)
    import pydevd  # noqa: F401

    from fastattach.engine import seam

    (module,) = [m for m in seam.monitoring_modules() if getattr(m, "start_monitoring", None)
                 is sys.modules[seam.SELECTOR_MODULE_NAME].start_monitoring]
    monkeypatch.setattr(module, "monitor", _WrappedMonitoring())
    caplog.set_level(logging.WARNING, logger="fastattach")
    # WHEN a client attaches and sets a conditional breakpoint
    host, port = fastattach.listen(("127.0.0.1", 0))
    with DAPClient.connect(host, port) as client:
        try:
            attach(client, [{"line": HOT_LINE, "condition": "i == 3"}])
            # THEN pydevd is unmodified, and still stops there
            assert _api.session().gate is None
            assert _api.session().host.py_db.__dict__.keys().isdisjoint(seam.WRAPPED_PYDB_METHODS)
            assert type(registered_callback(E.LINE)) is not _fasttrace.Trampoline
            thread, _ = run_in_thread(hot, 10)
            stopped = client.wait_stopped(20)
            assert stopped["reason"] == "breakpoint"
            client.request("continue", {"threadId": stopped["threadId"]})
            thread.join(30)
        finally:
            fastattach.stop()
    # AND one warning names what was missing
    warnings = [r.getMessage() for r in caplog.records if "breakpoint filter not installed" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"{module.__name__}.monitor" in warnings[0] and "pydevd runs unmodified" in warnings[0]


def test_stop_removes_every_callback_and_event_and_listen_works_again(unlimited_condition_budget):
    for round_number in range(2):
        host, port = fastattach.listen(("127.0.0.1", 0))
        client = DAPClient.connect(host, port)
        attach(client, [{"line": HOT_LINE, "condition": "i == 2"}])
        stepped_code = hot.__code__   # on 3.12, stop() gives hot a fresh copy of its code
        thread, result = run_in_thread(hot, 5)
        stopped = client.wait_stopped(20)
        client.request("next", {"threadId": stopped["threadId"]})
        assert client.wait_stopped(20)["reason"] == "step"
        client.request("continue", {"threadId": stopped["threadId"]})
        thread.join(30)
        assert result["value"] == 10, f"round {round_number}"
        client.close()
        fastattach.stop()
        assert [M.get_tool(tool) for tool in range(6)] == [None] * 6
        assert [M.get_events(tool) for tool in range(6)] == [0] * 6
        assert not fastattach.is_client_connected()
        # Re-arming tool 0 shows whether any local event was left on the stepped code.
        M.use_tool_id(0, "probe")
        try:
            assert M.get_local_events(0, stepped_code) == 0
        finally:
            M.free_tool_id(0)



def test_a_later_session_never_gives_a_new_thread_the_id_of_an_earlier_sessions_thread():
    # A thread keeps the id pydevd gave it (an attribute on the Thread), so ids handed out
    # in an earlier session are still in use; a session counting from 1 again named a new
    # worker like the main thread, and a `next` on that worker stepped the main thread instead
    # (seen on 3.14 and 3.15 as a step that never stopped).
    import debugpy.server.api  # noqa: F401  (puts the vendored pydevd on sys.path)
    from _pydevd_bundle import pydevd_constants

    from fastattach.engine.seam import Seam

    ids = []
    for _session in range(2):
        seam = Seam()
        seam.install_thread_ids()
        try:
            ids.append(pydevd_constants._get_or_compute_thread_id_with_lock(threading.Thread(), False))
        finally:
            seam.undo()
    assert len(set(ids)) == 2, ids

# 3.12 makes these when it creates a code object (and instrumentation undoes them); from 3.13
# the compiler emits the pairs as ordinary opcodes, and 3.14 adds the borrowing load pair.
SUPERINSTRUCTIONS = frozenset({"LOAD_FAST__LOAD_FAST", "LOAD_FAST__LOAD_CONST", "STORE_FAST__LOAD_FAST",
                               "STORE_FAST__STORE_FAST", "LOAD_CONST__LOAD_FAST",
                               "LOAD_FAST_LOAD_FAST", "STORE_FAST_LOAD_FAST", "STORE_FAST_STORE_FAST",
                               "LOAD_FAST_BORROW_LOAD_FAST_BORROW"})
PY312 = sys.version_info[:2] == (3, 12)


def superinstructions(code) -> int:
    return sum(i.opname in SUPERINSTRUCTIONS for i in dis.get_instructions(code, adaptive=True))


def make_adder(n):
    def add(x):
        a, b = x, n  # ADDER LINE
        return a + b
    return add


ADDER_LINE = _line_of("ADDER LINE")


def test_code_that_ran_attached_has_its_superinstructions_again_after_stop(unlimited_condition_budget):
    fresh = superinstructions(hot.__code__), superinstructions(make_adder(1).__code__)
    assert min(fresh) > 0
    host, port = fastattach.listen(("127.0.0.1", 0))
    client = DAPClient.connect(host, port)
    try:
        attach(client, [{"line": NEVER_LINE}])
        thread, result = run_in_thread(lambda: (hot(1000), make_adder(1)(2)))
        thread.join(30)
        assert result["value"] == (sum(range(1000)), 3)
        attached_code = hot.__code__
        while_attached = superinstructions(hot.__code__), superinstructions(make_adder(1).__code__)
        # 3.12 undid them in hot, which has line events for its breakpoint; the filter formed
        # them again in make_adder, which has no breakpoint; 3.13 and later never lose them.
        assert while_attached == ((0, fresh[1]) if PY312 else fresh)
        if PY312:
            assert _api.session().gate.tracer.stats()["superinstructions_formed"] > 0
        # A breakpoint set later in code whose superinstructions came back still stops.
        client.set_breakpoints(THIS_FILE, [{"line": NEVER_LINE}, {"line": ADDER_LINE}])
        thread, result = run_in_thread(lambda: make_adder(1)(2))
        stopped = client.wait_stopped(20)
        assert client.top_frame(stopped["threadId"])["line"] == ADDER_LINE
        client.request("continue", {"threadId": stopped["threadId"]})
        thread.join(30)
        assert result["value"] == 3
    finally:
        client.close()
        fastattach.stop()
    assert (superinstructions(hot.__code__), superinstructions(make_adder(1).__code__)) == fresh
    assert (hot.__code__ is not attached_code) == PY312
    assert hot(10) == 45 and make_adder(2)(3) == 5


def test_requicken_leaves_unseen_code_and_other_tools_alone():
    from fastattach.engine import superinstructions as _requicken

    if not PY312:   # 3.13 keeps superinstructions: there is nothing to give back
        code = hot.__code__
        assert _requicken.requicken(lambda _: True) == 0 and hot.__code__ is code
        return
    M.use_tool_id(3, "test")
    M.register_callback(3, E.PY_START, lambda code, offset: M.DISABLE)
    M.set_events(3, E.PY_START)
    try:
        assert make_adder(1)(1) == 2 and superinstructions(make_adder(1).__code__) == 0
        original = make_adder.__code__
        seen = (original, make_adder(1).__code__)   # as the filter would have: both ran

        def seen_by_filter(code):
            return any(code is ran for ran in seen)

        assert _requicken.requicken(seen_by_filter) == 0, "another tool is active"
    finally:
        M.set_events(3, 0)
        M.register_callback(3, E.PY_START, None)
        M.free_tool_id(3)
    unseen_function_code = hot.__code__
    assert _requicken.requicken(seen_by_filter) >= 1
    assert make_adder.__code__ is not original and hot.__code__ is unseen_function_code
    # The nested code is renewed with its parent, so closures made from now on have them.
    assert superinstructions(make_adder(1).__code__) > 0 and make_adder(2)(3) == 5


# Modules a process that is never debugged must not pay for: the debugger itself, and the
# standard modules a listener would usually pull in (~5 MB between them in a bare interpreter).
NOT_BEFORE_A_CLIENT = ("debugpy", "pydevd", "_pydevd_bundle", "ssl", "socket", "selectors", "logging", "typing",
                       "ipaddress", "json")


def test_listening_alone_imports_nothing_and_adds_no_events(tmp_path):
    # GIVEN a bare interpreter, with bytecode caches as an installed package has them (the
    # editable install of the test venv would otherwise compile our modules from source,
    # and the compiler's memory would count as ours)
    probe = textwrap.dedent(f"""
        import sys
        from time import sleep
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        before = rss()
        threads_before = len(__import__("os").listdir("/proc/self/task"))
        imported_before = set(sys.modules)
        import fastattach
        host, port = fastattach.listen(("127.0.0.1", 0))
        sleep(0.2)  # the accept thread is blocked in poll() by now
        facts = {{
            "rss_added": rss() - before,
            "threads_added": len(__import__("os").listdir("/proc/self/task")) - threads_before,
            "imported": sorted(m for m in {NOT_BEFORE_A_CLIENT!r} if m in sys.modules and m not in imported_before),
            "tools": [sys.monitoring.get_tool(t) for t in range(6)],
            "events": [sys.monitoring.get_events(t) for t in range(6)],
        }}
        fastattach.stop()
        print(__import__("json").dumps(facts))
    """)
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(tmp_path / "pycache"), PYTHONDONTWRITEBYTECODE="")
    subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True, env=env)
    # WHEN fastattach is imported and listens, before any client
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                         env=env)
    facts = json.loads(out.stdout)
    # THEN nothing of the debugger or the heavy standard modules is loaded, no monitoring
    # tool or event is registered, one thread is added, and under 2 MB of RSS
    assert facts["imported"] == []
    assert facts["tools"] == [None] * 6 and facts["events"] == [0] * 6
    assert facts["threads_added"] == 1
    # (Under AddressSanitizer every allocation carries shadow memory and redzones, so the
    # figure means nothing there; the other facts still hold.)
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        assert facts["rss_added"] < 2 * 1024 * 1024, facts


EIGHT_THREADS = textwrap.dedent("""
    import threading
    barrier = threading.Barrier(8)
    def work(k):
        barrier.wait()
        for i in range(3):
            value = k * 10 + i  # BREAK HERE
        return value
    threads = [threading.Thread(target=work, args=(k,), name=f"worker-{k}") for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("ALL DONE", flush=True)
""")


def test_eight_threads_hitting_breakpoints_at_once(tmp_path):
    target = tmp_path / "eight.py"
    target.write_text(EIGHT_THREADS)
    line = next(n for n, text in enumerate(EIGHT_THREADS.splitlines(), 1) if "# BREAK HERE" in text)
    proc = subprocess.Popen(
        [sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
         "--wait-for-client", str(target)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = int(proc.stderr.readline().rsplit(":", 1)[1])
        client = DAPClient.connect("127.0.0.1", port)
        # Each thread stops and continues on its own: with pydevd's defaults (stop and continue
        # every thread), a hit that races another thread's stop is reported and then resumed
        # by that thread's "continue", so how many stops a client sees would depend on timing.
        client.attach(breakpoints={str(target): [{"line": line}]}, stopAllThreadsOnSuspend=False)
        stops = []
        while len(stops) < 24:
            stopped = client.wait_stopped(30)
            frame = client.top_frame(stopped["threadId"])
            stops.append((stopped["threadId"], frame["line"], stopped["reason"]))
            client.request("continue", {"threadId": stopped["threadId"], "singleThread": True})
        client.disconnect()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0, err[-2000:]
    assert "ALL DONE" in out
    assert {reason for _, _, reason in stops} == {"breakpoint"}
    assert {stop_line for _, stop_line, _ in stops} == {line}
    assert len({thread_id for thread_id, _, _ in stops}) == 8

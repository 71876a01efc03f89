"""Always-on probes (fastattach.probes): the API, the engine under its own tool id, budgets, expiry.

Probes run in this very process so their `fastattach.probe` records reach caplog; what must
hold of a whole process (no debugpy import, the CLI) runs in a subprocess.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import wait_until

import fastattach
import fastattach.probes as probes
from fastattach import _api
from fastattach.engine import probes as engine_probes

MODULE = textwrap.dedent("""
    def handle(request_id, payload):
        token = "t-" + str(request_id)
        total = request_id * 2  # LOG

        result = total + 1  # SNAP
        if request_id < 0:
            return -1  # NEVER
        return result

    def serve(n, payload):
        total = 0
        for i in range(n):
            total += handle(i, payload)
        return total

    def hot(n):
        total = 0
        for i in range(n):
            total += i  # HOT
        return total
""")


def marker(name: str) -> int:
    return next(n for n, text in enumerate(MODULE.splitlines(), 1) if text.rstrip().endswith(f"# {name}"))


@pytest.fixture
def module(tmp_path):
    path = tmp_path / "probe_target.py"
    path.write_text(MODULE)
    spec = importlib.util.spec_from_file_location("probe_target", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, str(path)


@pytest.fixture(autouse=True)
def no_probes_left():
    """Every test starts and ends with no probe, no watched file, and the probes' tool id free."""
    yield
    probes.clear()
    assert engine_probes.TOOL_NAME not in {sys.monitoring.get_tool(i) for i in range(6)}


def records(caplog, kind=None):
    return [r for r in caplog.records if r.name == "fastattach.probe"
            and (kind is None or getattr(r, "probe_kind", None) == kind)]


def in_thread(target, *args):
    """Run target in a worker thread, which must finish: a probe never suspends a thread."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", target(*args)), name="probe-worker")
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the worker never finished: a probe suspended a thread"
    return box["result"]


def test_log_probe_renders_templates_into_the_probe_logger_and_removal_frees_the_tool(module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    probe_id = probes.add(path, marker("LOG"), log="request {request_id} total={request_id * 2} {{literal}} 100%")
    assert sys.monitoring.get_tool(4) == engine_probes.TOOL_NAME

    assert in_thread(mod.serve, 3, None) == sum(i * 2 + 1 for i in range(3))

    logged = records(caplog, "logpoint")
    assert [r.getMessage() for r in logged] == [f"request {i} total={i * 2} {{literal}} 100%" for i in range(3)]
    assert all(r.probe_breakpoint_id == probe_id and r.probe_line == marker("LOG") for r in logged)
    assert [p["id"] for p in probes.list()] == [probe_id]

    assert probes.remove(probe_id) is True
    assert probes.remove(probe_id) is False
    assert sys.monitoring.get_tool(4) is None and sys.monitoring.get_events(4) == 0
    caplog.clear()
    mod.serve(3, None)
    assert records(caplog) == []


def test_snapshot_probe_with_condition_captures_stack_and_locals(module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    fastattach.configure(snapshots_per_second=1000.0)
    try:
        probe_id = probes.add(path, marker("SNAP"), snapshot=True, condition="request_id == 2")
        in_thread(mod.serve, 4, {"user": "alice"})
    finally:
        fastattach.configure(snapshots_per_second=_api._options.DEFAULTS["snapshots_per_second"])
    snapshots = records(caplog, "snapshot")
    assert len(snapshots) == 1, [r.getMessage() for r in caplog.records]
    snap = snapshots[0].probe_snapshot
    assert snap["breakpointId"] == probe_id and snap["line"] == marker("SNAP")
    assert [entry["name"] for entry in snap["stack"][:2]] == ["handle", "serve"]
    assert snap["frames"][0]["locals"]["request_id"] == "2"
    assert snap["frames"][0]["locals"]["payload"] == repr({"user": "alice"})


def test_a_probe_on_a_line_without_code_is_refused_with_the_reason(module):
    _, path = module
    blank = marker("LOG") + 1
    with pytest.raises(probes.ProbeError, match=rf"line {blank} of .* has no code.*next line with code is {blank + 1}"):
        probes.add(path, blank, log="x")
    assert probes.list() == []
    assert sys.monitoring.get_tool(4) is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"log": "x", "snapshot": True}, "exactly one action"),
    ({}, "exactly one action"),
    ({"log": "{request_id"}, "never closed"),
    ({"log": "a } b"}, "closes nothing"),
    ({"log": "{1 +}"}, "is not a Python expression"),
    ({"log": "x", "condition": "a ==="}, "condition 'a ===' is not a Python expression"),
    ({"log": "x", "expires": -1}, "expires must be"),
])
def test_bad_probes_are_refused_with_what_is_wrong(module, kwargs, message):
    _, path = module
    with pytest.raises(probes.ProbeError, match=message):
        probes.add(path, marker("LOG"), **kwargs)
    assert probes.list() == []


def test_file_names_relative_to_sys_path_and_path_mappings(module, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    with pytest.raises(probes.ProbeError, match="no such file under any sys.path entry"):
        probes.add("probe_target.py", marker("LOG"), log="x")
    sys.path.append(str(tmp_path))
    relative = probes.add("probe_target.py", marker("LOG"), log="relative {request_id}")
    probes.set_path_mappings([{"localRoot": "/home/dev/src", "remoteRoot": str(tmp_path)}])
    try:
        mapped = probes.add("/home/dev/src/probe_target.py", marker("SNAP"), log="mapped {total}")
    finally:
        probes.set_path_mappings([])
    assert {p["id"]: p["path"] for p in probes.list()} == {relative: path, mapped: path}
    mod.serve(1, None)
    assert sorted(r.getMessage() for r in records(caplog, "logpoint")) == ["mapped 0", "relative 0"]


def test_a_probe_expires_without_being_removed(module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    probe_id = probes.add(path, marker("LOG"), log="hit {request_id}", expires=0.5)
    mod.serve(1, None)
    assert len(records(caplog, "logpoint")) == 1
    wait_until(lambda: probes.list() == [], what="the probe to expire")
    notices = [r for r in records(caplog, "notice") if r.probe_breakpoint_id == probe_id]
    assert notices and "expired after 0.5 s" in notices[-1].getMessage()
    wait_until(lambda: sys.monitoring.get_tool(4) is None, what="the tool id to be freed")
    caplog.clear()
    mod.serve(3, None)
    assert records(caplog, "logpoint") == []


def test_a_runaway_probe_is_paused_by_its_budget_and_says_so(module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    probe_id = probes.add(path, marker("HOT"), log="i={i}")
    assert in_thread(mod.hot, 20_000) == sum(range(20_000))
    logged = records(caplog, "logpoint")
    limit = _api._options.DEFAULTS["logpoint_messages_per_second"]
    assert 1 <= len(logged) <= limit * 3, "the message budget must bound the output"
    wait_until(lambda: [r for r in records(caplog, "notice") if r.probe_breakpoint_id == probe_id],
               what="the paused notice")   # the budget's supervisor thread logs it
    paused = [r for r in records(caplog, "notice") if r.probe_breakpoint_id == probe_id]
    assert paused and "paused" in paused[0].getMessage() and paused[0].levelno == logging.WARNING


def test_a_never_hit_probe_arms_only_its_line_and_replacing_it_moves_it(module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    probes.add(path, marker("NEVER"), log="never", id="p1")
    mod.serve(5, None)
    engine = _api.session().probes
    assert engine.tracer.cached_lines(mod.handle.__code__) == (marker("NEVER"),)
    assert engine.tracer.cached_lines(mod.hot.__code__) is None
    assert records(caplog, "logpoint") == []
    probes.add(path, marker("HOT"), log="hot {i}", id="p1")   # same id: replaced
    mod.hot(1)
    assert [r.getMessage() for r in records(caplog, "logpoint")] == ["hot 0"]
    assert [p["line"] for p in probes.list()] == [marker("HOT")]


def test_a_probe_reaches_a_loop_that_was_already_running(module, caplog):
    caplog.set_level(logging.INFO, logger="fastattach.probe")
    mod, path = module
    started, release = threading.Event(), threading.Event()
    source = textwrap.dedent("""
        def loop(started, release):
            n = 0
            started.set()
            while not release.is_set():
                n += 1  # LOOP
            return n
    """)
    loop_path = path.replace("probe_target", "probe_loop")
    with open(loop_path, "w") as f:
        f.write(source)
    namespace = {}
    exec(compile(source, loop_path, "exec"), namespace)
    thread = threading.Thread(target=namespace["loop"], args=(started, release))
    thread.start()
    try:
        started.wait(10)
        probes.add(loop_path, 6, log="looping {n > 0}")
        wait_until(lambda: records(caplog, "logpoint"), what="a record from the running loop")
    finally:
        release.set()
        thread.join(10)


def test_tool_ids_four_then_three_and_a_stale_one_of_ours_is_reused(module):
    _, path = module
    monitoring = sys.monitoring
    monitoring.use_tool_id(4, "someone-else")
    try:
        probes.add(path, marker("LOG"), log="x", id="a")
        assert monitoring.get_tool(3) == engine_probes.TOOL_NAME
        monitoring.use_tool_id(5, "x")   # 5 is never ours
        monitoring.free_tool_id(5)
        probes.remove("a")
        assert monitoring.get_tool(3) is None
        monitoring.use_tool_id(3, "another")
        with pytest.raises(RuntimeError, match=r"both are taken \(4 by 'someone-else', 3 by 'another'\)"):
            probes.add(path, marker("LOG"), log="x")
        monitoring.free_tool_id(3)
    finally:
        monitoring.free_tool_id(4)
    monitoring.use_tool_id(4, engine_probes.TOOL_NAME)   # left over by an engine that never finished
    probes.add(path, marker("LOG"), log="x", id="b")
    assert monitoring.get_tool(4) == engine_probes.TOOL_NAME and monitoring.get_tool(3) is None


def test_a_process_with_probes_only_never_imports_debugpy(module):
    _, path = module
    program = textwrap.dedent(f"""
        import importlib.util, logging, sys
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("fastattach.probe").addHandler(handler)
        logging.getLogger("fastattach.probe").setLevel(logging.INFO)
        spec = importlib.util.spec_from_file_location("probe_target", {path!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        import fastattach.probes
        fastattach.probes.add({path!r}, {marker("LOG")}, log="got {{request_id}}")
        fastattach.probes.add({path!r}, {marker("SNAP")}, snapshot=True)
        mod.serve(2, None)
        assert [r.getMessage() for r in records if r.probe_kind == "logpoint"] == ["got 0", "got 1"], records
        assert any(r.probe_kind == "snapshot" for r in records)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("debugpy", "pydevd", "_pydevd_bundle",
                                                                     "_pydevd_sys_monitoring", "_pydev_bundle"))
        print("loaded:", loaded)
        fastattach.probes.clear()
    """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout


# -- the watched probe file --------------------------------------------------------------------

def write_atomically(path, text):
    """As a ConfigMap update or a deployment tool does: the watcher never sees half a file."""
    import os

    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_probes(path, probes_list, **extra):
    import json

    write_atomically(path, json.dumps({"probes": probes_list, **extra}, indent=2))


def test_a_watched_file_adds_changes_and_removes_probes_and_keeps_the_last_good_ones(module, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fastattach")
    mod, path = module
    probe_file = tmp_path / "probes.json"
    probes.watch(probe_file)   # missing at first: nothing set, nothing fails
    assert probes.list() == []
    write_probes(probe_file, [{"id": "a", "file": path, "line": marker("LOG"), "log": "a {request_id}"}])
    wait_until(lambda: [p["id"] for p in probes.list()] == ["a"], what="the probe from the file")
    mod.serve(1, None)
    assert [r.getMessage() for r in records(caplog, "logpoint")] == ["a 0"]

    write_probes(probe_file, [{"id": "a", "file": path, "line": marker("LOG"), "log": "changed {request_id}"},
                              {"id": "b", "file": path, "line": marker("SNAP"), "snapshot": True, "expires": 60}])
    wait_until(lambda: sorted(p["id"] for p in probes.list()) == ["a", "b"]
               and probes.list()[0]["log"] == "changed {request_id}", what="the edit")

    write_atomically(probe_file, '{"probes": [\n  {"id": "a", "file": 1}\n')   # invalid JSON
    wait_until(lambda: any("invalid JSON" in r.getMessage() for r in caplog.records), what="the error")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "invalid JSON" in r.getMessage()]
    assert len(errors) == 1 and "line 3" in errors[0].getMessage() and "keeping the 2 probes" in errors[0].getMessage()
    write_probes(probe_file, [{"id": "a", "file": path, "line": "four", "log": "x"}])
    wait_until(lambda: any("field 'line' must be an integer" in r.getMessage() for r in caplog.records),
               what="the field error")
    assert sorted(p["id"] for p in probes.list()) == ["a", "b"], "an invalid file keeps the last good probes"

    blank = marker("LOG") + 1
    write_probes(probe_file, [{"id": "b", "file": path, "line": marker("SNAP"), "snapshot": True},
                              {"id": "c", "file": path, "line": blank, "log": "x"}])
    wait_until(lambda: [p["id"] for p in probes.list()] == ["b"], what="a removed and c refused")
    assert any(f"line {blank} of" in r.getMessage() and "has no code" in r.getMessage() for r in caplog.records)

    probes.unwatch(probe_file)
    assert probes.list() == []


def test_python_m_fastattach_probes_runs_a_program_with_probes_only(module, tmp_path):
    _, path = module
    probe_file = tmp_path / "probes.json"
    write_probes(probe_file, [{"id": "cli", "file": "probe_target.py", "line": marker("LOG"),
                               "log": "cli {request_id}"}])
    program = tmp_path / "main.py"
    program.write_text(textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(process)d %(message)s")
        import probe_target
        probe_target.serve(2, None)
        print("debugpy loaded:", "debugpy" in sys.modules)
    """))
    for argv, env in (([ "--probes", str(probe_file)], {}), ([], {"FASTATTACH_PROBES": str(probe_file)})):
        out = subprocess.run([sys.executable, "-m", "fastattach", *argv, str(program)], capture_output=True, text=True,
                             timeout=60, env={**__import__("os").environ, **env})
        assert out.returncode == 0, out.stderr
        assert "fastattach.probe" in out.stdout and "cli 0" in out.stdout and "cli 1" in out.stdout, out.stdout
        assert "debugpy loaded: False" in out.stdout


def test_a_probe_and_a_breakpoint_work_together_in_one_process(tmp_path):
    """The debugger (pydevd on tool 0, behind the C trampolines) and a probe (its own tool id) in one
    debuggee, driven by a real DAP client from outside (stop-all would suspend an in-process client)."""
    from _e2e import DebugServer

    from fastattach.net.client import DAPClient

    script = tmp_path / "both.py"
    script.write_text(textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")

        def handle(request_id):
            total = request_id * 2  # PROBE
            return total + 1  # BREAK

        for i in range(2):
            handle(i)
        print("finished", flush=True)
    """))
    lines = script.read_text().splitlines()
    probe_line = next(n for n, text in enumerate(lines, 1) if text.endswith("# PROBE"))
    break_line = next(n for n, text in enumerate(lines, 1) if text.endswith("# BREAK"))
    probe_file = tmp_path / "probes.json"
    write_probes(probe_file, [{"id": "p", "file": str(script), "line": probe_line, "log": "probe {request_id}"}])
    with DebugServer("fastattach", script, out_dir=tmp_path, env={"FASTATTACH_PROBES": str(probe_file)}) as server:
        client = DAPClient.connect(*server.address)
        try:
            result = client.attach(breakpoints={str(script): [{"line": break_line}]})
            assert result[str(script)][0]["verified"]
            for expected in (0, 1):
                thread_id = client.wait_stopped(timeout=30)["threadId"]
                frame = client.top_frame(thread_id)
                assert frame["line"] == break_line
                assert client.evaluate("total", frame["id"]) == str(expected * 2)
                # The probe ran on the line before, on this very thread, before the stop.
                server.wait_for_stdout(rf"^fastattach\.probe probe {expected}$")
                client.request("continue", {"threadId": thread_id})
            server.wait_for_stdout("^finished$")
        finally:
            client.close()
        assert server.wait() == 0

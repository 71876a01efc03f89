"""PEP 768 delivery against real CPython 3.14 and 3.15 targets (not memory images): a busy
main thread, one blocked in a syscall, a target that disabled remote debugging, and a script
sent to a chosen thread.

Each test runs against every 3.14+ interpreter of this environment (in the sid chroot:
.venv/3.14 and .venv/3.15, whichever runs the tests): the orchestrator writes the target's
memory itself, so one version attaches to the other as well as to its own.
"""

from __future__ import annotations

import struct
import sys
import threading
import time

import pytest
from targets.attach_harness import (  # noqa: F401 (cleanup is a fixture)
    ATTACH_TARGET,
    LINUX_X86_64_ONLY,
    PROBE_LOADER,
    Target,
    assert_port_answers,
    cleanup,
    other_python,
    probe_records,
    start_program,
    start_state,
)

from fastattach.attach import AttachError, _pep768, _runtime, attach

pytestmark = LINUX_X86_64_ONLY


def _pep768_pythons() -> list:
    found = []
    if sys.version_info >= (3, 14):
        found.append((f"{sys.version_info[0]}.{sys.version_info[1]}", sys.executable))
    other = other_python()
    if other is not None and tuple(map(int, other[0].split("."))) >= (3, 14):
        found.append(other)
    if not found:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="no CPython 3.14+ runs here (they are in the sid chroot: scripts/sid-chroot.sh run ...)"))]
    return [pytest.param(python, id=version) for version, python in sorted(found)]


PYTHONS = pytest.mark.parametrize("python", _pep768_pythons())


def _wait_for(condition, target, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        target.assert_healthy()
        assert time.monotonic() < deadline, f"gave up after {limit_s} s; target stderr: {target.stderr_text()}"
        time.sleep(0.002)


@PYTHONS
def test_busy_target_gets_the_loader_through_pep768(python, cleanup, tmp_path):
    # GIVEN a real 3.14+ target whose main thread runs bytecode
    out = tmp_path / "probe.jsonl"
    target = start_state("busy", python, env={"ATTACH_PROBE_OUT": str(out)})
    cleanup.append(target)
    # WHEN we attach
    report = {}
    host, port = attach(target.pid, loader=str(PROBE_LOADER), timeout=10, report=report)
    # THEN PEP 768 delivered it (no ptrace stop), the loader ran once, on a thread of its own
    assert report["method"] == "pep768"
    records = probe_records(out)
    assert len(records) == 1 and records[0]["port"] == port
    assert records[0]["native_id"] != target.pid
    assert_port_answers(port)
    target.assert_healthy()


BLOCKED_IN_READ = "import sys\nprint('ready', flush=True)\nline = sys.stdin.readline()\n" \
                  "for i in range(10**5): pass\nprint('woke', line.strip(), flush=True)\n" \
                  "import time\ntime.sleep(300)\n"


def _pending_call_address(pid: int) -> int:
    runtime = _runtime.locate(pid)
    plan = _pep768.plan(lambda address, size: _runtime.read_memory(pid, address, size), runtime.runtime_address,
                        "/x", pid)
    return plan.pending_call_address


@PYTHONS
def test_target_blocked_in_a_syscall_runs_the_request_when_it_returns(python, cleanup, tmp_path):
    # GIVEN a 3.14+ main thread blocked in read() on its stdin
    out = tmp_path / "probe.jsonl"
    target = start_program(BLOCKED_IN_READ, python, env={"ATTACH_PROBE_OUT": str(out)})
    cleanup.append(target)
    target.wait_main_thread_blocked()
    pending = _pending_call_address(target.pid)
    # WHEN a PEP 768-only attach is under way (its request is posted) and the thread returns
    outcome = {}

    def attach_in_background():
        try:
            outcome["address"] = attach(target.pid, loader=str(PROBE_LOADER), method="pep768", timeout=60,
                                        report=outcome)
        except AttachError as exc:
            outcome["error"] = exc

    attaching = threading.Thread(target=attach_in_background)
    attaching.start()
    _wait_for(lambda: not attaching.is_alive()
              or struct.unpack("<i", _runtime.read_memory(target.pid, pending, 4))[0] == 1, target)
    target.send_line("go")
    attaching.join(90)
    # THEN the request ran at its first bytecode after the syscall, and the program went on
    assert "error" not in outcome, outcome.get("error")
    assert outcome["method"] == "pep768"
    assert len(probe_records(out)) == 1
    target.wait_line(lambda line: line == "woke go", 30)
    target.assert_healthy()


@PYTHONS
def test_target_blocked_in_a_syscall_is_reached_by_the_injector(python, cleanup, tmp_path):
    # GIVEN a 3.14+ main thread blocked in read(), which a PEP 768 request would wait for
    out = tmp_path / "probe.jsonl"
    target = start_program(BLOCKED_IN_READ, python, env={"ATTACH_PROBE_OUT": str(out)})
    cleanup.append(target)
    target.wait_main_thread_blocked()
    # WHEN we attach the default way
    report = {}
    attach(target.pid, loader=str(PROBE_LOADER), timeout=10, report=report)
    # THEN it went through ptrace at once, and the read() goes on as if nothing happened
    assert report["method"] == "ptrace"
    assert len(probe_records(out)) == 1
    target.send_line("go")
    target.wait_line(lambda line: line == "woke go", 30)
    assert target.stderr_text() == ""
    target.assert_healthy()


@PYTHONS
@pytest.mark.parametrize("how", ["-X disable-remote-debug", "PYTHON_DISABLE_REMOTE_DEBUG=1"])
@pytest.mark.parametrize("state", ["busy", "sleep"])
def test_remote_debug_disabled_is_refused_clearly(python, how, state, cleanup, tmp_path):
    # GIVEN a 3.14+ target whose owner disabled remote debugging (busy: PEP 768 would reach
    # it; sleep: only ptrace would)
    out = tmp_path / "probe.jsonl"
    env = {"ATTACH_PROBE_OUT": str(out)}
    if how.startswith("-X"):
        command = [python, "-X", "disable-remote-debug", "-u"]
    else:
        command = [python, "-u"]
        env["PYTHON_DISABLE_REMOTE_DEBUG"] = "1"
    target = Target([*command, str(ATTACH_TARGET), state, "300"], env=env)
    cleanup.append(target)
    # WHEN we attach, THEN it is refused before anything reaches the target, by any way in,
    # and the message spells the setting the way CPython accepts it
    with pytest.raises(AttachError) as caught:
        attach(target.pid, loader=str(PROBE_LOADER), timeout=10)
    assert caught.value.reason == "remote_debug_disabled"
    assert f"remote debugging is disabled in PID {target.pid}" in str(caught.value)
    assert "-X disable-remote-debug" in str(caught.value) and "PYTHON_DISABLE_REMOTE_DEBUG" in str(caught.value)
    assert probe_records(out) == []
    target.assert_healthy()


@PYTHONS
def test_the_underscore_spelling_disables_nothing(python, cleanup, tmp_path):
    # GIVEN a target started with "-X disable_remote_debug", which CPython only stores in
    # sys._xoptions (docs/sys-monitoring-versions.md): remote debugging stays on
    out = tmp_path / "probe.jsonl"
    target = Target([python, "-X", "disable_remote_debug", "-u", str(ATTACH_TARGET),
                     "busy", "300"], env={"ATTACH_PROBE_OUT": str(out)})
    cleanup.append(target)
    # WHEN we attach, THEN it works: our refusal follows what CPython does, not the spelling
    attach(target.pid, loader=str(PROBE_LOADER), timeout=10)
    assert len(probe_records(out)) == 1
    target.assert_healthy()


CHOSEN_THREAD = """
import sys, threading, time
def work():
    while True:
        sum(range(1000))
worker = threading.Thread(target=work, daemon=True)
worker.start()
print("ready", flush=True)
print("worker", worker.native_id, flush=True)
while True:
    time.sleep(0.05)
    sum(range(1000))
"""


@PYTHONS
def test_script_runs_on_a_chosen_thread(python, cleanup, tmp_path):
    # GIVEN a 3.14+ target with a busy worker thread (3.15 moved native_thread_id in
    # _Py_DebugOffsets: a 3.14 reading finds no thread there)
    target = start_program(CHOSEN_THREAD, python)
    cleanup.append(target)
    worker_id = int(target.wait_line(lambda line: line.startswith("worker ")).split()[1])
    out = tmp_path / "ran-on"
    script = tmp_path / "script.py"
    script.write_text(f"import threading\nopen({str(out)!r}, 'w').write(str(threading.get_native_id()))\n")
    runtime = _runtime.locate(target.pid)
    # WHEN we send it a script for that thread
    plan = _pep768.send(target.pid, runtime.runtime_address, str(script), tid=worker_id)
    # THEN it runs there, and nowhere else
    _wait_for(lambda: out.exists() and out.read_text(), target)
    assert int(out.read_text()) == worker_id
    assert plan.thread_state != _pep768.plan(lambda a, n: _runtime.read_memory(target.pid, a, n),
                                             runtime.runtime_address, "/x", target.pid).thread_state
    target.assert_healthy()


@PYTHONS
def test_a_request_taken_without_the_loader_starting_is_reported_as_such(python, cleanup, tmp_path):
    # GIVEN a busy 3.14+ target, and a loader that runs but never starts (claims nothing):
    # what the target does when it cannot read what it is given, where the PEP 768 write
    # itself succeeds and only the target's stderr tells
    target = start_state("busy", python)
    cleanup.append(target)
    idle_loader = tmp_path / "idle_loader.py"
    idle_loader.write_text("pass\n")
    # WHEN a PEP 768-only attach gives up on it
    with pytest.raises(AttachError) as caught:
        attach(target.pid, loader=str(idle_loader), method="pep768", timeout=3)
    # THEN it says the request was taken and the loader did not start, not "no safe point"
    assert caught.value.reason == "loader_failed"
    assert str(caught.value).startswith(f"PID {target.pid} took the PEP 768 request but did not start the loader")
    target.assert_healthy()

"""Delivery of the loader into running processes: mailbox, ptrace injector, and what the target sees.

These use tests/targets/attach_probe_loader.py in place of the real loader, so they check the
mechanism alone: where the code ran, that the target keeps running afterwards, that the
interrupted syscall resumes, that registers (vector ones included) come back intact.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from targets.attach_harness import (  # noqa: F401 (cleanup is a fixture)
    LINUX_X86_64_ONLY,
    PROBE_LOADER,
    STATES,
    assert_port_answers,
    cleanup,
    probe_records,
    start_program,
    start_state,
)

from fastattach.attach import AttachError, _injector, attach

pytestmark = LINUX_X86_64_ONLY

# How a main thread that runs bytecode gets the loader, with no ptrace stop.
SAFE_POINT_METHOD = "pep768" if sys.version_info >= (3, 14) else "mailbox"


@pytest.mark.parametrize("state", STATES)
def test_attach_reaches_every_target_state(state, cleanup, tmp_path):
    # GIVEN a target started without a debugger, in one of the five states
    out = tmp_path / "probe.jsonl"
    target = start_state(state, env={"ATTACH_PROBE_OUT": str(out)})
    cleanup.append(target)
    if state in ("busy2", "sleep", "accept"):
        target.wait_main_thread_blocked()
    # WHEN we attach by PID
    report = {}
    host, port = attach(target.pid, ("127.0.0.1", 0), loader=str(PROBE_LOADER), timeout=10, report=report)
    # THEN it went the expected way: no ptrace stop at all when the main thread runs bytecode
    # (the safe-point delivery: the pending-call mailbox on 3.12/3.13, PEP 768 on 3.14+).
    # A main thread seen blocked may still be running Python at the instant the orchestrator
    # looks (busy2's, in join(), was once on 3.13): then the mailbox is tried first and taken,
    # which is as good a delivery.
    if state in ("busy", "alloc"):
        assert report["method"] == SAFE_POINT_METHOD
    else:
        assert report["method"] in ("ptrace", SAFE_POINT_METHOD)
    assert 0 < report["loader_started_s"] <= report["listening_s"]
    # and the loader ran once inside the target, its port answers, and the target runs on
    records = probe_records(out)
    assert len(records) == 1 and records[0]["pid"] == target.pid
    record = records[0]
    assert (host, port) == ("127.0.0.1", record["port"])
    assert_port_answers(port)
    assert record["main_name_leak"] == []
    # The loader never runs on the application's main thread (the mailbox only makes it start
    # a thread; ptrace starts the agent's thread), and it knows which thread is the main one.
    assert record["native_id"] != target.pid
    assert record["main_thread_ident"] == record["given_main_ident"] != record["ident"]
    target.assert_healthy()


def test_injected_accept_resumes_and_serves_connections(cleanup, tmp_path):
    # GIVEN a main thread blocked in accept()
    target = start_state("accept", env={"ATTACH_PROBE_OUT": str(tmp_path / "p.jsonl")})
    cleanup.append(target)
    # WHEN we inject into that very thread
    attach(target.pid, loader=str(PROBE_LOADER), method="ptrace", timeout=10)
    # THEN accept() was restarted, not broken: a new connection is served as before
    with socket.create_connection(("127.0.0.1", target.accept_port), timeout=5):
        pass
    assert target.wait_line(lambda line: line.startswith("accepted"), 10)
    target.assert_healthy()


def test_interrupted_sleep_keeps_its_schedule(cleanup):
    # GIVEN a main thread that sleeps in a loop (nanosleep is restarted through restart_syscall)
    target = start_program("import time\nprint('ready', flush=True)\n"
                           "while True:\n    time.sleep(0.2)\n    print('tick', flush=True)\n")
    cleanup.append(target)
    target.wait_line(lambda line: line == "tick")
    # WHEN it is interrupted mid-sleep, several times
    for _ in range(3):
        attach(target.pid, loader=str(PROBE_LOADER), method="ptrace", timeout=10)
    # THEN it keeps ticking
    for _ in range(3):
        target.wait_line(lambda line: line == "tick", 5)
    target.assert_healthy()


def test_threading_main_thread_is_fixed_when_first_imported_by_the_attach(cleanup, tmp_path):
    # GIVEN a target that never imported threading, its main thread blocked in sleep
    out = tmp_path / "probe.jsonl"
    target = start_program("import sys, time\nassert 'threading' not in sys.modules\n"
                           "print('ready', flush=True)\ntime.sleep(300)\n", env={"ATTACH_PROBE_OUT": str(out)})
    cleanup.append(target)
    # WHEN the attach thread is the first to import threading
    attach(target.pid, loader=str(PROBE_LOADER), timeout=10)
    # THEN threading.main_thread() is still the real main thread, and the attach thread is not it
    record = probe_records(out)[0]
    assert record["threading_was_imported"] is False
    assert record["main_thread_ident"] == record["given_main_ident"]
    assert record["ident"] != record["main_thread_ident"]
    assert record["thread"] != "MainThread"


def test_late_mailbox_run_is_a_no_op(cleanup, tmp_path):
    # GIVEN a main thread that sleeps a little, then runs bytecode, then prints
    out = tmp_path / "probe.jsonl"
    target = start_program("import time\nprint('ready', flush=True)\ntime.sleep(1.5)\n"
                           "for i in range(10**6): pass\nprint('done', flush=True)\ntime.sleep(300)\n",
                           env={"ATTACH_PROBE_OUT": str(out)})
    cleanup.append(target)
    target.wait_main_thread_blocked()
    # WHEN a safe-point-only attach (no ptrace) gives up while the call is still queued (a
    # pending call on 3.12/3.13, a PEP 768 request on 3.14+, which must be withdrawn)
    with pytest.raises(AttachError) as caught:
        attach(target.pid, loader=str(PROBE_LOADER), method="mailbox", timeout=0.5)
    assert caught.value.reason == "no_safe_point"
    assert "never reached a safe point in time" in str(caught.value)
    # THEN the late run, once the main thread wakes, finds the attach over and does nothing
    target.wait_line(lambda line: line == "done", 10)
    assert probe_records(out) == []
    assert target.stderr_text() == ""
    target.assert_healthy()


def test_repeated_attach_to_two_busy_threads(cleanup, tmp_path):
    # GIVEN the target that hung debugpy's --pid every time (two CPU-bound threads)
    out = tmp_path / "probe.jsonl"
    target = start_state("busy2", env={"ATTACH_PROBE_OUT": str(out)})
    cleanup.append(target)
    # WHEN we attach twenty times
    for _ in range(20):
        attach(target.pid, loader=str(PROBE_LOADER), timeout=10)
        target.assert_healthy()
    # THEN each attach ran the loader exactly once
    assert len(probe_records(out)) == 20


XMM_TARGET = r"""
#include <stdio.h>
#include <unistd.h>
/* Keep known values in xmm0..xmm7 and check them in a tight loop: an injector that does not
   restore the vector registers changes them under us (glibc's string functions use them). */
static long spin(long n) {
    long bad = 0;
    __asm__ volatile(
        "mov $0x1111, %%rax\n movq %%rax, %%xmm0\n"  "mov $0x2222, %%rax\n movq %%rax, %%xmm1\n"
        "mov $0x3333, %%rax\n movq %%rax, %%xmm2\n" "mov $0x4444, %%rax\n movq %%rax, %%xmm3\n"
        "mov $0x5555, %%rax\n movq %%rax, %%xmm4\n" "mov $0x6666, %%rax\n movq %%rax, %%xmm5\n"
        "mov $0x7777, %%rax\n movq %%rax, %%xmm6\n" "mov $0x8888, %%rax\n movq %%rax, %%xmm7\n"
        "mov %[n], %%rcx\n"
        "1:\n"
        "movq %%xmm0, %%rax\n cmp $0x1111, %%rax\n jne 2f\n"  "movq %%xmm1, %%rax\n cmp $0x2222, %%rax\n jne 2f\n"
        "movq %%xmm2, %%rax\n cmp $0x3333, %%rax\n jne 2f\n" "movq %%xmm3, %%rax\n cmp $0x4444, %%rax\n jne 2f\n"
        "movq %%xmm4, %%rax\n cmp $0x5555, %%rax\n jne 2f\n" "movq %%xmm5, %%rax\n cmp $0x6666, %%rax\n jne 2f\n"
        "movq %%xmm6, %%rax\n cmp $0x7777, %%rax\n jne 2f\n" "movq %%xmm7, %%rax\n cmp $0x8888, %%rax\n jne 2f\n"
        "dec %%rcx\n jnz 1b\n jmp 3f\n"
        "2: mov $1, %[bad]\n"
        "3:\n"
        : [bad] "+r"(bad) : [n] "r"(n)
        : "rax", "rcx", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
    return bad;
}
int main(int argc, char **argv) {
    printf("ready\n");
    fflush(stdout);
    for (int round = 0; round < 100000; round++) {
        if (spin(20000000)) { printf("CLOBBERED\n"); fflush(stdout); return 3; }
        if (access(argv[1], F_OK) == 0) { printf("INTACT\n"); fflush(stdout); return 0; }
    }
    return 4;
}
"""


def test_injection_restores_vector_registers(tmp_path):
    # GIVEN a native program whose hot loop keeps values live in xmm0..xmm7
    source = tmp_path / "xmm_target.c"
    source.write_text(XMM_TARGET)
    binary = tmp_path / "xmm_target"
    compiled = subprocess.run(["cc", "-O1", "-o", str(binary), str(source)], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    stop_file = tmp_path / "stop"
    proc = subprocess.Popen([str(binary), str(stop_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        # WHEN we inject into it mid-loop, many times (the loop is its "safe code": it holds no lock;
        # the agent then finds no Python there and returns an error, after running plenty of libc)
        for _ in range(30):
            assert proc.poll() is None, f"the target stopped: {proc.stdout.read().strip()}"
            with pytest.raises(AttachError) as caught:
                _injector.inject(proc.pid, _agent(), code_for_thread=lambda ident: "pass",
                                 python_module=str(binary), timeout=5)
            assert "not a CPython process" in str(caught.value)
            time.sleep(0.01)
        stop_file.touch()
        # THEN the loop never saw a changed register
        assert proc.stdout.readline().strip() == "INTACT"
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()


def _agent() -> str:
    from fastattach.attach._orchestrator import agent_path
    return agent_path()


def test_main_thread_waiting_for_a_file_lock(cleanup, tmp_path):
    import fcntl
    # GIVEN a main thread blocked in flock() on a lock we hold
    lock_path = tmp_path / "lock"
    with open(lock_path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        target = start_program(f"import fcntl\nf = open({str(lock_path)!r}, 'w')\nprint('ready', flush=True)\n"
                               f"fcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\n"
                               f"import time\ntime.sleep(300)\n", env={"ATTACH_PROBE_OUT": str(tmp_path / "p.jsonl")})
        cleanup.append(target)
        target.wait_main_thread_blocked()
        # WHEN we attach
        attach(target.pid, loader=str(PROBE_LOADER), timeout=10)
        # THEN the loader ran, and the interrupted flock() still takes the lock once we let go
        assert probe_records(tmp_path / "p.jsonl")[0]["native_id"] != target.pid
    target.wait_line(lambda line: line == "locked", 10)
    target.assert_healthy()

"""Every way an attach can fail has its own message, and the target always keeps running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from targets.attach_harness import (  # noqa: F401 (cleanup is a fixture)
    LINUX_X86_64_ONLY,
    PROBE_LOADER,
    REPO,
    cleanup,
    process_state,
    start_program,
    start_state,
)

from fastattach.attach import AttachError, attach

pytestmark = LINUX_X86_64_ONLY




def test_missing_loader_fails_at_once(cleanup, tmp_path):
    target = start_state("busy")
    cleanup.append(target)
    missing = tmp_path / "nowhere" / "safe_attach_loader.py"
    with pytest.raises(AttachError) as caught:
        attach(target.pid, loader=str(missing))
    assert caught.value.reason == "loader_missing"
    assert str(caught.value) == f"loader file not found: {missing}"
    target.assert_healthy()


def test_missing_loader_from_the_override_variable(cleanup, tmp_path, monkeypatch):
    target = start_state("busy")
    cleanup.append(target)
    missing = tmp_path / "override.py"
    monkeypatch.setenv("PTVS_SAFE_ATTACH_LOADER_OVERRIDE", str(missing))
    with pytest.raises(AttachError, match=f"^loader file not found: {missing}$"):
        attach(target.pid)


def test_no_such_process():
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(finished.stdout)
    with pytest.raises(AttachError) as caught:
        attach(gone, loader=str(PROBE_LOADER))
    assert caught.value.reason == "no_such_process"
    assert str(caught.value) == f"no such process: PID {gone}"


@pytest.mark.parametrize("pid", [0, -5, "123", True])
def test_invalid_pid(pid):
    with pytest.raises(AttachError) as caught:
        attach(pid, loader=str(PROBE_LOADER))
    assert caught.value.reason == "no_such_process"
    assert str(caught.value).startswith(f"invalid PID {pid!r}: expected a positive integer")


def test_not_a_python_process():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(AttachError) as caught:
            attach(sleeper.pid, loader=str(PROBE_LOADER))
        assert caught.value.reason == "not_python"
        assert str(caught.value) == (f"PID {sleeper.pid} is not a CPython process "
                                     f"(no libpython or python executable with _PyRuntime is mapped)")
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait(10)


def test_unsupported_python_version(cleanup, tmp_path):
    # The system's own 3.11 (a pyenv shim on PATH would not survive being renamed).
    old_python = "/usr/bin/python3.11"
    if not os.path.exists(old_python):
        pytest.skip("no /usr/bin/python3.11 on this machine to play an unsupported target")
    # A static interpreter under another name (as an embedding application would be): found anyway.
    renamed = tmp_path / "server-app"
    shutil.copy(old_python, renamed)
    target = start_program("import time\nprint('ready', flush=True)\ntime.sleep(300)\n", python=str(renamed))
    cleanup.append(target)
    with pytest.raises(AttachError) as caught:
        attach(target.pid, loader=str(PROBE_LOADER))
    assert caught.value.reason == "unsupported"
    assert f"PID {target.pid} runs Python 3.11." in str(caught.value)
    assert str(caught.value).endswith("which is not supported: attach needs CPython 3.12 or later")
    target.assert_healthy()


def test_not_permitted_says_why_and_how_to_fix(cleanup):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop CAP_SYS_PTRACE")
    # GIVEN a target with every capability, and an orchestrator without CAP_SYS_PTRACE
    target = start_state("busy")
    cleanup.append(target)
    code = (f"from fastattach.attach import attach, AttachError\n"
            f"try:\n    attach({target.pid}, loader={str(PROBE_LOADER)!r})\n"
            f"except AttachError as e:\n    print(e.reason)\n    print(e)\n")
    result = subprocess.run(["setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace", "--",
                             sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    if "setpriv:" in result.stderr:
        pytest.skip(f"cannot drop capabilities here: {result.stderr.strip()}")
    reason, message = result.stdout.splitlines()[:2]
    # THEN the error names the cause and every fix
    assert reason == "permission"
    assert message.startswith(f"not allowed to attach to PID {target.pid} (owned by uid 0; we run as uid 0): ")
    assert "Permission denied" in message or "Operation not permitted" in message
    for fix in ("run as the target's user or as root", "CAP_SYS_PTRACE", "SYS_PTRACE", "ptrace_scope" if
                os.path.exists("/proc/sys/kernel/yama/ptrace_scope") else "Yama is not loaded"):
        assert fix in message
    target.assert_healthy()


def test_stopped_target_is_refused_and_left_as_it_was(cleanup):
    target = start_state("busy")
    cleanup.append(target)
    os.kill(target.pid, signal.SIGSTOP)
    try:
        for _ in range(500):
            if process_state(target.pid).startswith("T"):
                break
            time.sleep(0.01)
        with pytest.raises(AttachError) as caught:
            attach(target.pid, loader=str(PROBE_LOADER))
        assert caught.value.reason == "target_stopped"
        assert str(caught.value).startswith(f"PID {target.pid} is stopped (T (stopped)); resume it "
                                            f"(kill -CONT {target.pid})")
    finally:
        os.kill(target.pid, signal.SIGCONT)
    target.assert_healthy()


SPIN_SOURCE = """
#include <unistd.h>
/* Says "ready" only once it is in native code, so the test never races the call into it. */
void spin_forever(void) {
    (void)!write(1, "ready\\n", 6);
    for (;;) { __asm__ volatile("" ::: "memory"); }
}
"""


def test_main_thread_never_at_a_safe_point(cleanup, tmp_path):
    # GIVEN a main thread spinning in native code outside CPython: it may hold any lock there,
    # so it is never borrowed, and it runs no bytecode, so no queued call runs either
    source = tmp_path / "spin.c"
    source.write_text(SPIN_SOURCE)
    library = tmp_path / "libspin.so"
    built = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(library), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    target = start_program(f"import ctypes\nctypes.CDLL({str(library)!r}).spin_forever()\n")
    cleanup.append(target)
    # WHEN we attach with a short timeout
    with pytest.raises(AttachError) as caught:
        attach(target.pid, loader=str(PROBE_LOADER), timeout=1.5)
    # THEN it says so, and the target was let go
    assert caught.value.reason == "no_safe_point"
    assert str(caught.value).startswith(f"the main thread of PID {target.pid} never reached a safe point in time")
    assert str(caught.value).endswith("the target was left running")
    target.assert_healthy()
    assert process_state(target.pid).startswith("R")


def test_loader_that_never_reports_times_out_and_target_runs_on(cleanup, tmp_path):
    # GIVEN a loader that claims the attach and then hangs (on the agent's thread)
    hanging = tmp_path / "hanging_loader.py"
    hanging.write_text(textwrap.dedent("""
        import os, time
        os.rename(_fa_settings, _fa_settings + ".claimed")
        time.sleep(30)
    """))
    target = start_state("sleep")
    cleanup.append(target)
    target.wait_main_thread_blocked()
    # WHEN we attach with a short timeout
    with pytest.raises(AttachError) as caught:
        attach(target.pid, loader=str(hanging), timeout=1.5)
    # THEN the timeout names the state the target is in, and it still serves its work
    assert caught.value.reason == "timeout"
    message = str(caught.value)
    assert message.startswith(f"attach to PID {target.pid} timed out after 1.5 s: the loader was delivered (ptrace)")
    assert "target state: S (sleeping), main thread in clock_nanosleep" in message
    target.assert_healthy()
    target.send_line("hit")
    assert target.wait_line(lambda line: line.startswith("hit "), 10)


def test_attach_to_ourselves_is_refused():
    with pytest.raises(AttachError, match="is this process: use fastattach.listen"):
        attach(os.getpid(), loader=str(PROBE_LOADER))


def test_target_already_traced_by_another_debugger(cleanup):
    # GIVEN a target whose main thread another tracer holds (as gdb or strace would)
    target = start_state("sleep")
    cleanup.append(target)
    target.wait_main_thread_blocked()
    holder = subprocess.Popen([sys.executable, "-c", f"from fastattach import _libc\n_libc.ptrace_seize({target.pid})\n"
                               f"print('holding', flush=True)\nimport sys\nsys.stdin.readline()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "holding"
        # WHEN we attach (the blocked main thread needs ptrace)
        with pytest.raises(AttachError) as caught:
            attach(target.pid, loader=str(PROBE_LOADER), timeout=5)
        # THEN the error names the other tracer
        assert caught.value.reason == "permission"
        assert str(caught.value) == (f"PID {target.pid} is already traced by PID {holder.pid} (a debugger such as "
                                     f"gdb or strace?); detach it first")
    finally:
        holder.stdin.close()  # the holder exits; the kernel detaches it
        holder.wait(10)
        holder.stdout.close()
    target.assert_healthy()


def test_target_exiting_during_the_attach():
    # GIVEN targets that exit at some point while we attach (sleeping or spinning until then)
    import random
    rng = random.Random(4)
    for i in range(20):
        delay = rng.uniform(0, 0.15)
        wait = f"time.sleep({delay})" if i % 2 else f"t = time.time()\nwhile time.time() - t < {delay}: pass"
        program = f"import os, time\nprint('ready', flush=True)\n{wait}\nos._exit(0)\n"
        proc = subprocess.Popen([sys.executable, "-c", program],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            # WHEN we attach; THEN it either works or says the process went away: nothing else
            try:
                attach(proc.pid, loader=str(PROBE_LOADER), timeout=5)
            except AttachError as exc:
                assert exc.reason == "no_such_process", str(exc)
                assert f"PID {proc.pid}" in str(exc)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            proc.stdout.close()


def test_a_target_that_exits_while_stopping_is_reported_gone_not_unrestorable():
    # GIVEN a traced process that exits on its own before our interrupt lands
    from fastattach import _libc
    from fastattach.attach._injector import _release, _Tracee
    proc = subprocess.Popen([sys.executable, "-c", "import os; os._exit(0)"])
    try:
        _libc.ptrace_seize(proc.pid)
        tracee = _Tracee(proc.pid, proc.pid, time.monotonic() + 10)
        # WHEN waiting for a stop sees the exit
        with pytest.raises(AttachError) as stop:
            while True:   # a seized process stops only for signals and events: pass them on
                tracee.wait_stop("waiting")
                tracee.resume(0)
        # THEN the reason is that the process went away, and the restore has nothing to add
        assert stop.value.reason == "no_such_process"
        _release(tracee, None, None)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_pep768_method_on_a_python_without_it_is_refused(cleanup):
    # GIVEN a target older than 3.14 (this Python, or the other one of this environment)
    from targets.attach_harness import other_python
    candidates = [sys.executable] if sys.version_info < (3, 14) else []
    other = other_python()
    if other is not None and tuple(map(int, other[0].split("."))) < (3, 14):
        candidates.append(other[1])
    if not candidates:
        pytest.skip("no Python older than 3.14 runs here (the sid chroot has only 3.14 and 3.15)")
    target = start_state("busy", candidates[0])
    cleanup.append(target)
    # WHEN we insist on PEP 768, THEN it says why not and what to use instead
    with pytest.raises(AttachError) as caught:
        attach(target.pid, loader=str(PROBE_LOADER), method="pep768", timeout=10)
    assert caught.value.reason == "unsupported"
    assert "which has no PEP 768 (3.14+); use method 'auto' or 'mailbox'" in str(caught.value)
    target.assert_healthy()

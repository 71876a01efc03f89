"""os._exit() while listening: the wrapper announces the exit in this process only, exits with
the status asked for, and goes away with stop() (see python/fastattach/_exit_hook.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_program(source: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True,
                          timeout=60)


def test_os_exit_announces_in_this_process_and_keeps_its_status():
    proc = run_program("""
        import os
        from fastattach import _exit_hook
        real = os._exit
        _exit_hook.install(lambda: print("announced in", "parent" if os.getpid() == parent else "child",
                                         flush=True))
        parent = os.getpid()
        child = os.fork()
        if child == 0:
            os._exit(7)            # a forked child has no relay: it must exit at once, unannounced
        print("child status", os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), flush=True)
        _exit_hook.uninstall()
        print("restored", os._exit is real, flush=True)
        _exit_hook.install(lambda: (print("announced", flush=True), 1 / 0))   # fails, yet exits as asked
        os._exit(5)
    """)
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout.splitlines() == ["child status 7", "restored True", "announced"]
    assert proc.stderr == ""


def test_listen_wraps_os_exit_and_stop_unwraps_it():
    proc = run_program("""
        import os, fastattach
        real = os._exit
        fastattach.listen(("127.0.0.1", 0))
        print("wrapped", os._exit is not real, flush=True)   # os._exit() flushes nothing
        fastattach.stop()
        print("after stop", os._exit is real, flush=True)
        fastattach.listen(("127.0.0.1", 0))
        os._exit(4)                # no client: exits at once
    """)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.splitlines() == ["wrapped True", "after stop True"]

"""Several orchestrators attaching to one process at once take turns: the first starts the
listener, the later ones report that same listener, and every one succeeds."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest
from targets.attach_harness import (  # noqa: F401 (cleanup is a fixture)
    LINUX_X86_64_ONLY,
    cleanup,
    debug_session,
    start_controlled,
)

from fastattach import _libc
from fastattach.attach._errors import process_state

pytestmark = LINUX_X86_64_ONLY


# busy: a safe-point delivery (the main thread runs Python); sleep: ptrace, one tracer at a time.
@pytest.mark.parametrize("state", ["busy", "sleep"])
def test_three_attaches_at_once_all_report_the_one_listener(state, cleanup, tmp_path):
    target, controller = start_controlled(state, tmp_path)
    cleanup.append(target)
    # WHEN three `--pid` attaches start at the same moment
    attaches = [subprocess.Popen([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--pid",
                                  str(target.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
    outcomes = [attach.communicate(timeout=90) + (attach.returncode,) for attach in attaches]
    # THEN each one succeeds and names the same listener, which serves a debug session
    assert [code for _, _, code in outcomes] == [0, 0, 0], outcomes
    ports = {int(re.search(r"listening on 127\.0\.0\.1:(\d+) in PID", out).group(1)) for out, _, _ in outcomes}
    assert len(ports) == 1, outcomes
    assert debug_session("127.0.0.1", ports.pop(), controller).endswith(f"-{target.pid}")
    target.assert_healthy()


def test_an_attach_waiting_its_turn_is_not_refused_for_the_tracing_stop_of_the_one_before(cleanup, tmp_path):
    # GIVEN a target in a tracing stop while the attach lock is held: what a later attach finds
    # while the first one injects (it once refused the target as "stopped" 1 run in ~20)
    target, controller = start_controlled("sleep", tmp_path)
    cleanup.append(target)
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lock.bind(f"\0fastattach-attach-{target.pid}")
    _libc.ptrace_seize(target.pid)
    try:
        _libc.ptrace_interrupt(target.pid)
        os.waitpid(target.pid, 0x40000000)  # __WALL: the target is not our child
        assert process_state(target.pid).startswith("t")
        # WHEN another attach starts meanwhile
        attach = subprocess.Popen([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--pid",
                                   str(target.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # THEN it waits its turn (the old check refused at once, in well under these 3 s)
        time.sleep(3)
        assert attach.poll() is None, attach.communicate()
    finally:
        _libc.ptrace_detach(target.pid)
        lock.close()
    out, err = attach.communicate(timeout=90)
    # AND once the target is free again it attaches, and the listener serves a session
    assert attach.returncode == 0, (out, err)
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) in PID", out).group(1))
    assert debug_session("127.0.0.1", port, controller).endswith(f"-{target.pid}")
    target.assert_healthy()

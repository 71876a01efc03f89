"""Starting the debugger inside a process whose thread never lets go of the GIL.

Every import releases the GIL on each stat, open and read, and a thread that wants it back
waits for the switch interval; beside a loop that itself releases and retakes the GIL
often, it can wait far longer. Our start-up shortens the interval for its own duration
(safe_attach_loader.prompt_gil_handoffs) and puts the application's value back after.
"""

from __future__ import annotations

import re
import sys
import time

import pytest
from _e2e import DebugServer, marker_line, target, wait_stop

from fastattach._handoff import STARTUP_SWITCH_INTERVAL, prompt_gil_handoffs
from fastattach.net.client import DAPClient


def test_handoffs_shorten_the_interval_only_inside_the_block(switch_interval):
    sys.setswitchinterval(0.005)
    with prompt_gil_handoffs():
        assert sys.getswitchinterval() == pytest.approx(STARTUP_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == 0.005


def test_nested_and_overlapping_uses_end_with_the_application_value(switch_interval):
    sys.setswitchinterval(0.004)
    outer, inner = prompt_gil_handoffs(), prompt_gil_handoffs()
    # Overlapping, not nested: the outer one ends first, as when the loader finishes while
    # the first client's session is still starting on the relay thread.
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert sys.getswitchinterval() == 0.004
    inner.__exit__(None, None, None)
    assert sys.getswitchinterval() == 0.004


def test_a_value_the_application_set_meanwhile_is_kept(switch_interval):
    sys.setswitchinterval(0.005)
    with prompt_gil_handoffs():
        sys.setswitchinterval(0.002)
    assert sys.getswitchinterval() == 0.002


def test_an_interval_already_shorter_is_left_alone(switch_interval):
    sys.setswitchinterval(STARTUP_SWITCH_INTERVAL / 2)
    shorter = sys.getswitchinterval()
    with prompt_gil_handoffs():
        assert sys.getswitchinterval() == shorter
    assert sys.getswitchinterval() == shorter


def test_the_interval_comes_back_when_the_block_raises(switch_interval):
    sys.setswitchinterval(0.005)
    with pytest.raises(ZeroDivisionError), prompt_gil_handoffs():
        _ = 1 / 0
    assert sys.getswitchinterval() == 0.005


def test_a_session_works_beside_a_thread_that_never_waits(tmp_path):
    # GIVEN a debuggee whose main thread computes and makes a short system call every
    # ~100 us (without the shortened interval, pydevd's import alone took 160 s beside it,
    # and each DAP request waited seconds)
    script = target("gil_hog.py")
    hit_file, report_file = tmp_path / "hit", tmp_path / "report"
    env = {"GIL_HOG_HIT": str(hit_file), "GIL_HOG_REPORT": str(report_file)}
    with DebugServer("fastattach", script, "120", out_dir=tmp_path, wait_for_client=False, env=env) as server:
        server.wait_for_stdout("spinning")
        # WHEN a client attaches (the first one: pydevd is imported now) and sets a breakpoint
        client = DAPClient.connect(*server.address, timeout=30)
        try:
            client.attach(breakpoints={str(script): [{"line": marker_line(script, "HOG-HIT")}]}, timeout=30)
            hit_file.touch()
            # THEN the session starts and the breakpoint stops the loop
            stop = wait_stop(client, timeout=30)
            assert stop.line == marker_line(script, "HOG-HIT")
            # AND while the client is attached, waiting threads get the GIL promptly
            interval = float(client.evaluate("__import__('sys').getswitchinterval()", stop.frame_id))
            assert interval == pytest.approx(STARTUP_SWITCH_INTERVAL)
            hit_file.unlink()
            client.request("continue", {"threadId": stop.thread_id}, timeout=30)
        finally:
            client.disconnect()
        # AND once it is gone, the application has its own switch interval back (the relay
        # ends the session just after answering the disconnect, so ask until it shows)
        reported: list[str] = []
        deadline = time.monotonic() + 30
        while "0.005" not in reported and time.monotonic() < deadline:
            report_file.touch()
            while report_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.05)
            reported = re.findall(r"^interval (\S+)$", server.stdout(), re.MULTILINE)
        assert reported and reported[-1] == "0.005", reported

"""The clean way back to zero overhead: `--pid PID --stop`, and fastattach.stop() from the
client's debug console, which answers before the session ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from _e2e import DebugServer, marker_line
from targets.attach_harness import (  # noqa: F401 (cleanup is a fixture)
    LINUX_X86_64_ONLY,
    NOTHING_LEFT,
    cleanup,
    start_controlled,
    start_state,
)

from fastattach.net.client import DAPClient, DAPError


def fastattach_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastattach", *args], capture_output=True, text=True, timeout=60)


@LINUX_X86_64_ONLY
def test_stop_by_pid_removes_the_listener_its_client_and_pydevd(cleanup, tmp_path):
    # GIVEN a process attached by PID, with a client
    target, controller = start_controlled("sleep", tmp_path)
    cleanup.append(target)
    attached = fastattach_cli("--listen", "127.0.0.1:0", "--pid", str(target.pid))
    assert attached.returncode == 0, attached.stderr
    port = int(attached.stdout.rsplit(":", 1)[1].split()[0])
    client = DAPClient.connect("127.0.0.1", port)
    try:
        client.attach()
        # WHEN `--pid PID --stop` is run
        stopped = fastattach_cli("--pid", str(target.pid), "--stop")
        # THEN it says what it removed, the client is disconnected, the port closed, and nothing
        # is left registered in sys.monitoring; the target runs on
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == (
            f"fastattach: removed from PID {target.pid}: the listener on 127.0.0.1:{port}; its client's session "
            f"(disconnected); pydevd's sys.monitoring callbacks and events (tool id freed)"), stopped.stdout
        with pytest.raises(DAPError):
            client.request("threads", timeout=10)
    finally:
        client.close()
    with pytest.raises(OSError):
        DAPClient.connect("127.0.0.1", port, timeout=1)
    target.assert_healthy()
    again = fastattach_cli("--pid", str(target.pid), "--stop")
    assert again.stdout.strip() == (f"fastattach: PID {target.pid} has fastattach loaded but not listening: "
                                    f"nothing to remove"), again
    assert controller.stop_and_probe() == NOTHING_LEFT


@LINUX_X86_64_ONLY
def test_stop_by_pid_leaves_a_process_without_fastattach_without_it(cleanup):
    target = start_state("sleep")
    cleanup.append(target)
    target.wait_main_thread_blocked()
    stopped = fastattach_cli("--pid", str(target.pid), "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"fastattach: fastattach is not loaded in PID {target.pid}: nothing to remove"
    target.assert_healthy()


def test_stop_needs_a_pid_and_nothing_else():
    assert "give it --pid PID" in fastattach_cli("--stop").stderr
    assert "takes no --listen" in fastattach_cli("--pid", "1", "--stop", "--listen", "5678").stderr


SERVICE = textwrap.dedent("""
    import time

    def tick(i):
        return i + 1  # BREAK

    i = 0
    while True:
        i = tick(i)
        print(f"tick {i}", flush=True)
        time.sleep(0.02)
""")


def test_stop_from_the_debug_console_answers_before_the_session_ends(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False) as server:
        client = DAPClient.connect(*server.address)
        try:
            client.attach(breakpoints={str(script): [{"line": marker_line(script, "BREAK")}]})
            stopped = client.wait_stopped(20)
            frame = client.top_frame(stopped["threadId"])
            # WHEN the user types fastattach.stop() in the debug console, at a breakpoint
            answer = client.request("evaluate", {"expression": "__import__('fastattach').stop()",
                                                 "frameId": frame["id"], "context": "repl"}, check=False)
            # THEN the console gets its answer, then the session ends and the program runs on
            assert answer["success"], answer
            said = [e["body"]["output"] for e in client.events("output")]
            assert any("fastattach: stopping" in text for text in said), said
            with pytest.raises(DAPError):
                for _ in range(100):
                    client.request("threads", timeout=1)
        finally:
            client.close()
        seen = server.stdout().count("tick")
        server.wait_for_stdout(rf"tick {seen + 5}\b")
        with pytest.raises(OSError):
            DAPClient.connect(*server.address, timeout=1)

"""Signals that arrive while the debuggee is stopped at a breakpoint are the program's.

SIGINT's KeyboardInterrupt, or a SIGTERM handler's SystemExit, raised while pydevd keeps the
main thread suspended inside its LINE callback, reach the program's own frame once it runs
again, as under debugpy; the process never dies of SIGSEGV (3.13: the trampoline pydevd's
re-registration replaced was freed while it ran). scripts/asan.sh runs this file too.
"""

from __future__ import annotations

import os
import signal
import textwrap

import pytest
from _e2e import DebugServer, marker_line

from fastattach.net.client import DAPClient

SERVICE = textwrap.dedent("""
    import signal, sys, time

    def on_term(signum, frame):
        sys.exit(3)

    signal.signal(signal.SIGTERM, on_term)

    def work(i):
        return i * 2  # BREAK

    try:
        i = 0
        while True:
            work(i)
            i += 1
            time.sleep(0.01)
    except KeyboardInterrupt:
        print("the program caught KeyboardInterrupt", flush=True)
        sys.exit(7)
""")


@pytest.mark.parametrize(("signum", "status", "printed"), [
    (signal.SIGINT, 7, "the program caught KeyboardInterrupt"),
    (signal.SIGTERM, 3, ""),
], ids=["SIGINT", "SIGTERM-handler-exits"])
def test_a_signal_while_stopped_reaches_the_program(tmp_path, signum, status, printed):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False) as server:
        client = DAPClient.connect(*server.address)
        try:
            client.attach(breakpoints={str(script): [{"line": marker_line(script, "BREAK")}]})
            stopped = client.wait_stopped(20)
            # WHEN the signal arrives while the main thread is suspended at the breakpoint
            os.kill(server.process.pid, signum)
            # (The exception may already have ended the wait, and the program its run, so
            # the answers are not waited for.)
            client.send("setBreakpoints", {"source": {"path": str(script)}, "breakpoints": []})
            client.send("continue", {"threadId": stopped["threadId"]})
            # THEN the program sees its exception where it stopped and ends as it chooses
            assert server.wait(20) == status, server.output()
            assert printed in server.stdout()
        finally:
            client.close()

"""ProcessPoolExecutor under a client that sends an editor's plain attach (issue 11, point 3).

tests/test_fork.py checks what a pool worker finds in itself with ``subProcess: false``, and
the child-session tests stop in pool workers. This one is the pool as a user meets it: the
attach carries no ``subProcess`` at all (so fastattach's default applies, as debugpy's does),
the client has a breakpoint in the worker function and attaches to no child, and the pool,
with each start method, still finishes with the right results; then the parent's own session
stops at that breakpoint.
"""

from __future__ import annotations

import json
import re

import pytest
from _e2e import DebugServer, marker_line, target, wait_stop
from dap_schema import assert_valid

from fastattach.net.client import DAPClient

pytestmark = pytest.mark.timeout(180)

FORKING = target("forking.py")
CHILD_LINE = marker_line(FORKING, "child-breakpoint")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_finishes_under_a_client_with_the_default_attach_arguments(method, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    # GIVEN a client attached with a breakpoint in the pool's worker function, and no subProcess
    with DebugServer("fastattach", FORKING, f"pool-{method}", str(reports), out_dir=tmp_path) as server:
        client = DAPClient.connect(*server.address, timeout=20)
        client.attach(breakpoints={str(FORKING): [{"line": CHILD_LINE}]})
        # WHEN the program runs a ProcessPoolExecutor of 2 workers over 4 tasks
        server.wait_for_stdout(r"^PARENT done", timeout=120)
        # THEN the pool finished with every task's result
        pool = json.loads(re.search(r"^POOL (.*)$", server.stdout(), re.MULTILINE).group(1))
        assert pool == [[0, 2, 4]] * 4
        # AND the parent's session stops at the breakpoint in the parent's own calls
        stop = wait_stop(client, timeout=60)
        assert stop.line == CHILD_LINE
        assert client.evaluate("os.getpid()", stop.frame_id) == str(server.process.pid)
        (reports / "stop").touch()
        client.set_breakpoints(str(FORKING), [])
        client.request("continue", {"threadId": stop.thread_id})
        server.wait_for_stdout(r"^PARENT stopped")
        client.disconnect()
        assert_valid(client.transcript)

"""A program written for debugpy (`import debugpy`, debugpy.listen/wait_for_client/breakpoint...)
run unchanged under `python -m fastattach --listen ...` gets fastattach's behaviour: the
command line's listener serves its debugpy.listen(), its breakpoint() stops through
fastattach's filter, and connect() is refused in one clear line (docs/debugpy-compat.md)."""

from __future__ import annotations

import pytest
from _e2e import DebugServer, breakpoint_filter_stats, marker_line, target, wait_stop
from dap_schema import assert_valid

from fastattach.net.client import DAPClient

PROGRAM = target("debugpy_instrumented.py")


@pytest.mark.timeout(120)
def test_a_debugpy_instrumented_program_runs_unchanged_under_fastattach(tmp_path):
    # GIVEN the program started by fastattach's command line, without --wait-for-client
    with DebugServer("fastattach", PROGRAM, out_dir=tmp_path, wait_for_client=False) as server:
        # THEN its debugpy.listen(5678) returned fastattach's address instead of binding 5678
        listened = server.wait_for_stdout(r"^listen \('127\.0\.0\.1', (\d+)\)$")
        assert int(listened.group(1)) == server.address[1]
        server.wait_for_stdout(r"^connected before wait False$")
        client = DAPClient.connect(*server.address, timeout=20)
        try:
            # WHEN a client attaches, its debugpy.wait_for_client() returns and debugpy.breakpoint() stops
            client.attach()
            stop = wait_stop(client)
            assert (stop.line, stop.path) == (marker_line(PROGRAM, "MARK-AFTER-BREAKPOINT"), str(PROGRAM))
            # through fastattach's pydevd and filter, not a debugpy of the program's own
            assert breakpoint_filter_stats(client, stop.frame_id) is not None
            assert client.evaluate("__import__('debugpy').__fastattach_patched__", stop.frame_id) == "True"
            client.request("continue", {"threadId": stop.thread_id})
            assert server.wait() == 0, server.output()
            client.disconnect()
        finally:
            client.close()
    assert server.stdout().splitlines()[2:] == [
        "connected True",
        "connect: debugpy.connect() is not supported under fastattach: fastattach listens (the command line's "
        "--listen, or fastattach.listen()) and the client attaches to it",
        "after 7",
    ]
    assert_valid(client.transcript)


def test_debugpy_imported_before_install_is_patched_too():
    # The watcher is for a later import; a debugpy already imported is patched at once.
    import subprocess
    import sys
    import textwrap

    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import debugpy, fastattach
        from fastattach import _debugpy_shim
        _debugpy_shim.install()
        print(debugpy.wait_for_client is fastattach.wait_for_client, debugpy.breakpoint is fastattach.breakpoint)
        print(sorted(name for name in __import__("sys").modules if name.startswith("pydevd")))
    """)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["True True", "[]"]

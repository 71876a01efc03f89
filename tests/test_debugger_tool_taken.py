"""Another tool already holds sys.monitoring's debugger tool id (a vendor's live debugger,
coverage, a profiler): a client's attach is refused with a message naming that tool, the log
says the same, and the tool and the program run on untouched."""

from __future__ import annotations

import textwrap

from _e2e import DebugServer

from fastattach.net.client import DAPClient

SERVICE = textwrap.dedent("""
    import sys, time
    M = sys.monitoring
    M.use_tool_id(M.DEBUGGER_ID, "vendor-live-debugger")
    calls = 0

    def on_start(code, offset):
        global calls
        calls += 1

    M.register_callback(M.DEBUGGER_ID, M.events.PY_START, on_start)
    M.set_events(M.DEBUGGER_ID, M.events.PY_START)

    def work(i):
        return i + 1

    i = 0
    while True:
        i = work(i)
        if i % 20 == 0:
            still_ours = M.register_callback(M.DEBUGGER_ID, M.events.PY_START, on_start) is on_start
            print("tick", calls, M.get_tool(M.DEBUGGER_ID), M.get_events(M.DEBUGGER_ID) == M.events.PY_START,
                  still_ours, "pydevd" in sys.modules, flush=True)
        time.sleep(0.005)
""")


def test_attach_is_refused_naming_the_tool_that_holds_the_debugger_id(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False) as server:
        server.wait_for_stdout("^tick")
        with DAPClient.connect(*server.address) as client:
            client.initialize()
            # WHEN a client attaches
            answer = client.request("attach", {"name": "Attach"}, check=False)
        # THEN it is told which tool holds the id, and so is the log
        assert not answer["success"]
        assert "tool id 0 is held by 'vendor-live-debugger'" in answer["message"], answer
        assert "held by 'vendor-live-debugger'" in server.stderr()
        # AND that tool keeps its callback and events, pydevd never loads, the program runs on
        seen = server.stdout().count("tick")
        server.wait_for_stdout(rf"(?s)(tick.*){{{seen + 3}}}")
        last = server.stdout().splitlines()[-1].split()
        assert last[2:] == ["vendor-live-debugger", "True", "True", "False"], last
        assert int(last[1]) > 0

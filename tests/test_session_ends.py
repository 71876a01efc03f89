"""Sessions that end abnormally leave no thread suspended and no breakpoint set.

A real debuggee behind the CLI stops at a breakpoint; then the session dies in one of the
ways a service meets (pydevd answers with more than the relay passes on, the client's
connection is reset) or is sent requests whose fields have the wrong type, which would kill
pydevd's reader thread. In each case the stopped thread runs again and the breakpoint is gone:
the program keeps printing ticks, with no client. The time from the abnormal end to the first
tick is printed (run with -s to see it); it is not asserted, the machine being noisy.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import dap_schema
import pytest
from _e2e import DebugServer, kill_if_running, marker_line

from fastattach.net.client import DAPClient, DAPError

SERVICE = textwrap.dedent("""
    import time

    def tick(i):
        return i + 1  # BREAK

    i = 0
    while True:
        i = tick(i)
        print(f"tick {i} {time.time():.6f}", flush=True)
        time.sleep(0.02)
""")


@pytest.fixture
def stopped_service(tmp_path):
    """(server, client, script, stopped body): the service's main thread stopped at BREAK."""
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    server = DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False)
    client = DAPClient.connect(*server.address)
    try:
        client.attach(breakpoints={str(script): [{"line": marker_line(script, "BREAK")}]})
        stopped = client.wait_stopped(20)
        yield server, client, script, stopped
    finally:
        client.close()
        server.stop()


def _ticks(server) -> list[tuple[int, float]]:
    return [(int(n), float(t)) for n, t in (line.split()[1:] for line in server.stdout().splitlines()
                                            if line.startswith("tick "))]


def assert_runs_on_without_client(server, ended_at: float, how: str) -> None:
    """The suspended thread resumes and, the breakpoint being gone, keeps ticking."""
    seen = len(_ticks(server))
    deadline = time.monotonic() + 20
    while len(_ticks(server)) < seen + 5:
        assert time.monotonic() < deadline and server.process.poll() is None, (
            f"the debuggee did not run on after {how}:\n{server.output()}")
        time.sleep(0.05)
    first_after = next(t for _, t in _ticks(server) if t >= ended_at)
    print(f"\n{how}: the suspended thread resumed {first_after - ended_at:.3f} s after the session's end")


def test_a_pydevd_answer_over_the_relays_limit_ends_the_session_and_resumes(stopped_service):
    server, client, _, stopped = stopped_service
    frame_id = client.top_frame(stopped["threadId"])["id"]
    # WHEN pydevd's answer exceeds the relay's 64 MB limit (the full value, in the clipboard context)
    seq = client.send("evaluate", {"expression": "'x' * (80 * 1024 * 1024)", "frameId": frame_id,
                                   "context": "clipboard"})
    ended_at = time.time()
    # THEN the client is told why, the connection ends, and the program runs on
    with pytest.raises(DAPError, match="connection closed"):
        client.wait_response(seq, timeout=60)
    said = [e["body"]["output"] for e in client.events("output")]
    assert any("could not be passed on" in text for text in said), said
    assert_runs_on_without_client(server, ended_at, "a pydevd message over 64 MB")


# A client in a process of its own, so that killing it resets the connection (with SO_LINGER 0
# its kernel answers with RST), as when an editor is killed while the debuggee is stopped.
KILLED_CLIENT = textwrap.dedent("""
    import socket, struct, sys, time
    from fastattach.net.client import DAPClient

    host, port, path, line = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    client = DAPClient.connect(host, port)
    client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.attach(breakpoints={path: [{"line": line}]})
    client.wait_stopped(20)
    print("STOPPED", flush=True)
    time.sleep(600)
""")


def test_a_client_killed_while_stopped_resumes_the_thread(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False) as server:
        client = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, *map(str, server.address), str(script),
                                   str(marker_line(script, "BREAK"))], stdout=subprocess.PIPE, text=True)
        try:
            assert client.stdout.readline().strip() == "STOPPED"
            time.sleep(0.5)   # stopped for a while: no tick comes in between
            # WHEN the client is killed while the debuggee is stopped
            ended_at = time.time()
            client.kill()
            client.wait()
            assert_runs_on_without_client(server, ended_at, "a client killed (RST)")
        finally:
            kill_if_running(client)
            client.stdout.close()


BAD_REQUESTS = {
    "source.path is a number": ("setBreakpoints", {"source": {"path": 42}, "breakpoints": [{"line": 3}]}),
    "source.path has a NUL": ("setBreakpoints", {"source": {"path": "/tmp/a\0b.py"}, "breakpoints": [{"line": 3}]}),
    "line is a string": ("setBreakpoints", {"source": {"path": "/tmp/x.py"}, "breakpoints": [{"line": "3"}]}),
    "breakpoints is a string": ("setBreakpoints", {"source": {"path": "/tmp/x.py"}, "breakpoints": "all"}),
    "sourceReference of 2**70": ("source", {"sourceReference": 2**70}),
    "patterns are numbers": ("setDebuggerProperty", {"dontTraceStartPatterns": [1, 2]}),
    "pathMappings is a string": ("attach", {"pathMappings": "/a:/b"}),
    "pathMappings holds numbers": ("attach", {"pathMappings": [{"localRoot": 1, "remoteRoot": 2}]}),
    "debugOptions is a number": ("attach", {"debugOptions": 7}),
}


def test_requests_of_the_wrong_shape_are_refused_before_pydevd(stopped_service):
    server, client, script, stopped = stopped_service
    error_response = dap_schema._validator("ErrorResponse")
    for what, (command, arguments) in BAD_REQUESTS.items():
        # WHEN an authenticated client sends a request whose fields have the wrong type
        answer = client.request(command, arguments, check=False)
        # THEN it gets an error response that says what is wrong, and pydevd still serves it
        assert not answer["success"], (what, answer)
        assert f"invalid '{command}' request" in answer["message"], (what, answer)
        error_response.validate(answer)
        assert client.request("threads")["success"], f"pydevd stopped answering after: {what}"
    # AND the session still ends normally, resuming the thread
    client.set_breakpoints(str(script), [])
    ended_at = time.time()
    client.disconnect()
    assert_runs_on_without_client(server, ended_at, "a normal disconnect after the refused requests")


def test_an_attach_of_the_wrong_shape_is_refused_before_pydevd_starts(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False) as server:
        with DAPClient.connect(*server.address) as client:
            client.initialize()
            answer = client.request("attach", {"pathMappings": [{"localRoot": 1, "remoteRoot": 2}]}, check=False)
            assert not answer["success"]
            assert "arguments.pathMappings[0].localRoot must be string" in answer["message"], answer
        # the next client attaches as usual
        with DAPClient.connect(*server.address) as client:
            client.attach()
            assert client.request("threads")["success"]

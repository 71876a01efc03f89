"""What a client expects from debugpy's adapter, which fastattach's relay replaces: the same
program and the same client messages under debugpy 1.8.22 and under fastattach, and what
the client sees compared (in the style of test_scenario_parity.py).

`terminated` after a disconnect and after os._exit(); continue and pause without a threadId
meaning every thread; a continue answered when the program exits at once; debugpySystemInfo.
Every message of every session is checked against the DAP schema.
"""

from __future__ import annotations

import pytest
from _e2e import DebugServer, marker_line, target, wait_stop
from dap_schema import validate

from fastattach.net.client import DAPClient

PROGRAM = target("adapter_client.py")
KINDS = ["debugpy", "fastattach"]


def assert_schema(client: DAPClient, kind: str, *, requests_without_thread_id=()):
    """Every message follows the DAP schema, except the client's own requests that leave out
    threadId on purpose (the point of the test: the schema requires one)."""
    report = validate(client.transcript, allow_reordering=kind == "debugpy")
    expected = [f"client request {command} seq=" for command in requests_without_thread_id]
    unexpected = [error for error in report.errors
                  if not (any(marker in error for marker in expected) and "'threadId' is a required property" in error)]
    assert not unexpected, f"{kind}: DAP session breaks the schema or the seq rules:\n{report}"


def stopped_session(kind, mode, out_dir, **attach_args):
    server = DebugServer(kind, PROGRAM, mode, out_dir=out_dir)
    client = DAPClient.connect(*server.address, timeout=20)
    client.attach(breakpoints={str(PROGRAM): [{"line": marker_line(PROGRAM, "MARK-STOP")}]}, **attach_args)
    return server, client, wait_stop(client)


def after(client: DAPClient, seq: int) -> list[str]:
    """What the client received after its request `seq` was sent, as 'event NAME' / 'response COMMAND'."""
    sent = next(i for i, (direction, message, _) in enumerate(client.transcript)
                if direction == "send" and message["seq"] == seq)
    return [f"{message['type']} {message.get('event') or message.get('command')}"
            for direction, message, _ in client.transcript[sent + 1:]
            if direction == "recv" and message.get("event") not in ("module", "output", "continued", "thread")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_disconnect_is_answered_after_terminated(kind, tmp_path):
    # GIVEN a client stopped at a breakpoint
    server, client, _ = stopped_session(kind, "end", tmp_path)
    try:
        # WHEN it disconnects
        seq = client.send("disconnect", {"restart": False})
        client.wait_response(seq, timeout=20)
        # THEN it hears `terminated` first, as debugpy's adapter says it, and the program ends
        assert after(client, seq) == ["event terminated", "response disconnect"]
        assert server.wait() == 0, server.output()
        client.close()
        assert_schema(client, kind)
    finally:
        client.close()
        server.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stepping_resumes_all_threads", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_continue_into_os_exit_is_answered_and_terminated(kind, stepping_resumes_all_threads, tmp_path):
    # GIVEN a program that calls os._exit(3) right after the stop it is held at
    server, client, stop = stopped_session(kind, "exit", tmp_path,
                                           steppingResumesAllThreads=stepping_resumes_all_threads)
    try:
        # WHEN the client continues
        seq = client.send("continue", {"threadId": stop.thread_id})
        # THEN the continue is answered, `terminated` follows, and the exit status is the program's
        response = client.wait_response(seq, timeout=20)
        assert response["success"], response
        client.wait_event("terminated", timeout=20)
        assert server.wait() == 3, server.output()
        assert server.stdout().splitlines()[-1] == "EXITING"
        assert after(client, seq) == ["response continue", "event terminated"]
        client.close()
        assert_schema(client, kind)
    finally:
        client.close()
        server.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_continue_and_pause_without_thread_id_mean_every_thread(kind, tmp_path):
    # GIVEN a program with two threads, stopped (all threads) at a breakpoint
    server, client, stop = stopped_session(kind, "spin", tmp_path)
    try:
        # WHEN the client continues without a threadId
        response = client.request("continue", {}, check=False)
        # THEN it succeeds for every thread, as debugpy's adapter answers it
        assert response["success"], response
        assert response["body"]["allThreadsContinued"] is True
        # WHEN it then pauses without a threadId
        response = client.request("pause", {}, check=False)
        assert response["success"], response
        # THEN the program stops, every thread with it
        paused = client.wait_stopped(timeout=20)
        assert paused["reason"] == "pause" and paused.get("allThreadsStopped") is True, paused
        names = {thread["name"] for thread in client.request("threads")["body"]["threads"]}
        assert {"MainThread", "spinner"} <= names, names
        frame = wait_stop_frame(client, paused["threadId"])
        client.evaluate("globals().update(stop_spinning=True)", frame)
        client.request("continue", {}, check=False)
        assert server.wait() == 0, server.output()
        client.disconnect()
        assert_schema(client, kind, requests_without_thread_id=("continue", "pause"))
    finally:
        client.close()
        server.stop()


def wait_stop_frame(client: DAPClient, thread_id: int) -> int:
    frames = client.request("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 50})["body"]
    return frames["stackFrames"][0]["id"]


def system_info_shape(body: dict) -> dict:
    """The keys of each section, and the values a client reads that must be equal."""
    return {section: sorted(value) if isinstance(value, dict) else type(value).__name__
            for section, value in body.items()}


@pytest.fixture(scope="module")
def system_info(tmp_path_factory):
    answers = {}
    for kind in KINDS:
        server, client, stop = stopped_session(kind, "end", tmp_path_factory.mktemp(kind))
        try:
            answers[kind] = (client.request("debugpySystemInfo", check=False), server.process.pid)
            client.request("continue", {"threadId": stop.thread_id})
            assert server.wait() == 0, server.output()
            client.disconnect()
            assert_schema(client, kind)
        finally:
            client.close()
            server.stop()
    return answers


@pytest.mark.timeout(180)
def test_debugpy_system_info_is_answered_like_debugpy(system_info):
    ours, our_pid = system_info["fastattach"]
    reference, reference_pid = system_info["debugpy"]
    assert ours["success"] and reference["success"], (ours, reference)
    body, reference_body = ours["body"], reference["body"]
    # THEN the same sections with the same fields, plus fastattach's version
    assert set(reference_body) == {"debugpy", "python", "platform", "process", "pydevd"}
    assert body.pop("fastattach") == {"version": __import__("fastattach").__version__}
    assert system_info_shape(body) == system_info_shape(reference_body)
    # and the values describe the debuggee itself
    assert body["process"]["pid"] == our_pid and reference_body["process"]["pid"] == reference_pid
    for section in ("debugpy", "python", "platform"):
        assert body[section] == reference_body[section]
    assert body["process"]["executable"] == reference_body["process"]["executable"]


@pytest.mark.timeout(60)
def test_a_request_pydevd_cannot_answer_before_exit_gets_an_error_not_silence():
    # GIVEN fastattach's relay with a request pydevd never answered when the program ended
    from fastattach.net.adapter import AdapterRules

    rules = AdapterRules()
    for seq, command in ((5, "stackTrace"), (6, "continue"), (7, "terminate")):
        assert rules.request_from_client({"seq": seq, "type": "request", "command": command,
                                          "arguments": {"threadId": 1}}) in (None, {
            "seq": seq, "type": "request", "command": command, "arguments": {"threadId": "*"}})
    # WHEN the debuggee's end goes away
    goodbye = rules.goodbye()
    # THEN each gets its answer (continue and terminate did what was asked), then terminated, once
    assert [(m.get("request_seq"), m.get("command") or m["event"], m.get("success")) for m in goodbye] == [
        (5, "stackTrace", False), (6, "continue", True), (7, "terminate", True), (None, "terminated", None)]
    assert "the debuggee ended before it answered" in goodbye[0]["message"]
    assert rules.goodbye() == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_terminate_ends_the_debuggee_with_an_answer_and_terminated(kind, tmp_path):
    # GIVEN a running program with two threads, stopped at a breakpoint
    server, client, _ = stopped_session(kind, "spin", tmp_path)
    try:
        # WHEN the client asks to terminate it (pydevd ends the process with os._exit)
        response = client.request("terminate", {}, check=False)
        # THEN the request succeeded, the client hears `terminated`, and the program is gone
        assert response["success"], response
        client.wait_event("terminated", timeout=20)
        server.wait()
        assert server.stdout().splitlines() == ["STARTED"]
        client.close()
        assert_schema(client, kind)
    finally:
        client.close()
        server.stop()

"""The schema and seq checks catch broken sessions, and the tap records a real one faithfully.

The editor clients are lenient (dap-mode accepts a stopped event with no reason), so
these negative controls are what makes a passing validation mean something.
"""

from __future__ import annotations

from pathlib import Path

import dap_schema
import debugpy
import pytest
from _e2e import SERVER, DebugServer, marker_line, target, wait_stop
from _tap import DAPTap

from fastattach.net.client import DAPClient

pytestmark = pytest.mark.timeout(120)


def initialize_request(seq=1):
    return {"seq": seq, "type": "request", "command": "initialize", "arguments": {"adapterID": "debugpy"}}


def initialize_response(seq=1, request_seq=1):
    return {"seq": seq, "type": "response", "request_seq": request_seq, "command": "initialize",
            "success": True, "body": {"supportsConfigurationDoneRequest": True}}


def stopped_event(seq, **body):
    return {"seq": seq, "type": "event", "event": "stopped", "body": {"reason": "breakpoint", "threadId": 1, **body}}


def transcript(*pairs):
    return [(direction, message, 0.0) for direction, message in pairs]


def test_schema_comes_from_the_installed_debugpy():
    path = dap_schema.schema_path()
    assert Path(debugpy.__file__).parent in path.parents
    assert path.name == "debugProtocol.json"


def test_a_correct_session_passes():
    report = dap_schema.validate(transcript(
        ("send", initialize_request()), ("recv", initialize_response()), ("recv", stopped_event(2))))
    assert report.ok, report
    assert report.messages == 3


def test_stopped_event_without_reason_is_an_error():
    event = stopped_event(2)
    del event["body"]["reason"]
    report = dap_schema.validate(transcript(("send", initialize_request()), ("recv", initialize_response()),
                                            ("recv", event)))
    assert not report.ok
    assert any("StoppedEvent" in e and "'reason' is a required property" in e for e in report.errors), report


def test_request_is_checked_against_its_own_definition():
    bad = {"seq": 1, "type": "request", "command": "evaluate", "arguments": {"expression": {"not": "a string"}}}
    report = dap_schema.validate(transcript(("send", bad)))
    assert any("EvaluateRequest at /arguments/expression" in e for e in report.errors), report


def test_failed_response_is_checked_as_error_response():
    failed = {"seq": 1, "type": "response", "request_seq": 1, "command": "setBreakpoints", "success": False,
              "message": "no such file", "body": {}}
    request = {"seq": 1, "type": "request", "command": "setBreakpoints", "arguments": {"source": {"path": "x.py"}}}
    report = dap_schema.validate(transcript(("send", request), ("recv", failed)))
    # A SetBreakpointsResponse would need body.breakpoints; an error response does not.
    assert report.ok, report


def test_custom_events_are_checked_as_generic_events():
    custom = {"seq": 1, "type": "event", "event": "debugpySockets", "body": {"sockets": []}}
    report = dap_schema.validate(transcript(("recv", custom)))
    assert report.ok, report
    assert any("debugpySockets" in n and "generic Event" in n for n in report.notes), report
    broken = {"seq": 2, "type": "event", "body": {}}
    assert not dap_schema.validate(transcript(("recv", custom), ("recv", broken))).ok


def test_seq_gap_is_an_error():
    report = dap_schema.validate(transcript(
        ("send", initialize_request()), ("recv", initialize_response(seq=1)), ("recv", stopped_event(3))))
    assert any("seq 3 after 1 (gap)" in e for e in report.errors), report
    # a gap is an error even where reordering is tolerated
    report = dap_schema.validate(transcript(
        ("send", initialize_request()), ("recv", initialize_response(seq=1)), ("recv", stopped_event(3))),
        allow_reordering=True)
    assert any("gaps, missing [2]" in e for e in report.errors), report


def test_duplicate_and_reordered_seq():
    duplicate = transcript(("send", initialize_request()), ("recv", initialize_response(seq=1)),
                           ("recv", stopped_event(1)))
    assert any("(duplicate)" in e for e in dap_schema.validate(duplicate).errors)
    assert any("duplicate seq [1]" in e for e in dap_schema.validate(duplicate, allow_reordering=True).errors)
    swapped = transcript(("send", initialize_request()), ("recv", stopped_event(2)),
                         ("recv", initialize_response(seq=1)))
    assert any("(out of order)" in e for e in dap_schema.validate(swapped).errors)
    tolerated = dap_schema.validate(swapped, allow_reordering=True)
    assert tolerated.ok, tolerated
    assert any("out of order" in n for n in tolerated.notes)


def test_unanswered_and_mismatched_requests():
    unanswered = dap_schema.validate(transcript(("send", initialize_request())))
    assert any("'initialize' seq 1 never answered" in e for e in unanswered.errors), unanswered
    wrong_seq = dap_schema.validate(transcript(("send", initialize_request()),
                                               ("recv", initialize_response(request_seq=7))))
    assert any("request_seq 7 answers no open request" in e for e in wrong_seq.errors), wrong_seq
    wrong_command = initialize_response()
    wrong_command["command"] = "attach"
    mismatched = dap_schema.validate(transcript(("send", initialize_request()), ("recv", wrong_command)))
    assert any("answers a 'initialize' request with command 'attach'" in e for e in mismatched.errors), mismatched


def test_each_tap_connection_has_its_own_seq():
    records = [{"conn": 1, "dir": "c2s", "msg": initialize_request()},
               {"conn": 2, "dir": "c2s", "msg": initialize_request()},
               {"conn": 2, "dir": "s2c", "msg": initialize_response()},
               {"conn": 1, "dir": "s2c", "msg": initialize_response()}]
    assert dap_schema.validate(records).ok


def test_framing_errors_from_the_tap_are_errors():
    report = dap_schema.validate([{"conn": 1, "dir": "s2c", "framing_error": "missing Content-Length header"}])
    assert any("missing Content-Length header" in e for e in report.errors), report


def drop_stopped_reason(message):
    if message.get("event") == "stopped":
        message["body"].pop("reason", None)
    return message


@pytest.mark.parametrize("fault", [None, drop_stopped_reason], ids=["faithful", "stopped-without-reason"])
def test_tap_records_a_real_session(tmp_path, fault):
    # GIVEN a debuggee behind a tap that forwards faithfully, or breaks every stopped event
    script = target("scenario.py")
    with DebugServer(SERVER, script, out_dir=tmp_path) as server, \
            DAPTap(server.address, tmp_path / "dap.jsonl", rewrite_server_message=fault) as tap:
        # WHEN a client runs a short session through the tap
        client = DAPClient.connect(*tap.address, timeout=20)
        try:
            client.attach(breakpoints={str(script): [{"line": marker_line(script, "MARK-PLAIN")}]})
            stop = wait_stop(client)
            assert stop.line == marker_line(script, "MARK-PLAIN")
            client.disconnect()
        finally:
            client.close()
        assert server.wait() == 0, server.output()
        tap.close()

    # THEN the tap saw exactly what the client saw, in the same order
    assert [m for d, m, _ in client.transcript if d == "send"] == tap.messages("c2s")
    assert [m for d, m, _ in client.transcript if d == "recv"] == tap.messages("s2c")
    # and the schema check passes on the faithful session and names the broken event otherwise
    report = dap_schema.validate(tmp_path / "dap.jsonl", allow_reordering=SERVER == "debugpy")
    if fault is None:
        assert report.ok, report
    else:
        assert any("StoppedEvent" in e and "'reason' is a required property" in e for e in report.errors), report


def test_disconnect_may_go_unanswered_only_after_terminated():
    disconnect = {"seq": 2, "type": "request", "command": "disconnect", "arguments": {}}
    terminated = {"seq": 2, "type": "event", "event": "terminated"}
    early = dap_schema.validate(transcript(("send", initialize_request()), ("recv", initialize_response()),
                                           ("send", disconnect)))
    assert any("'disconnect' seq 2 never answered" in e for e in early.errors), early
    after_end = dap_schema.validate(transcript(("send", initialize_request()), ("recv", initialize_response()),
                                               ("recv", terminated), ("send", disconnect)))
    assert after_end.ok, after_end

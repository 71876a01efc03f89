"""Scripted debug scenarios, run under plain debugpy and under fastattach: same stops.

fastattach filters breakpoints in C in front of pydevd, so any difference in where and
why the debuggee stops, or in what a logpoint prints, is a fastattach bug. The main
scenario has a condition, a hit condition, a logpoint, a plain breakpoint, step
over/in/out and continue. A second one covers the corners where C hands over to pydevd:
a condition that raises, a condition with a hit condition, a logpoint whose expression
fails, a function breakpoint and the "raised" exception filter.
Lines are found by their MARK-* comments.
"""

from __future__ import annotations

import pytest
from _e2e import DebugServer, breakpoint_filter_stats, marker_line, outputs, target, wait_stop
from dap_schema import assert_valid

from fastattach.net.client import DAPClient, DAPError

SCENARIO = target("scenario.py")

# The request sent at each stop, in order; the last one lets the program run to its end.
STEPS = ["continue", "continue", "next", "stepIn", "next", "stepOut", "next", "stepIn", "stepOut", "continue"]


def breakpoints():
    line = lambda marker: marker_line(SCENARIO, marker)  # noqa: E731
    return [
        {"line": line("MARK-LOGPOINT"), "logMessage": "LOG i={i} total={total}"},
        {"line": line("MARK-COND"), "condition": "i == 3"},
        {"line": line("MARK-HIT"), "hitCondition": "3"},
        {"line": line("MARK-PLAIN")},
    ]


def run_scenario(kind, out_dir):
    """Run the scenario under one server; return what a user would have seen."""
    with DebugServer(kind, SCENARIO, out_dir=out_dir) as server:
        client = DAPClient.connect(*server.address, timeout=20)
        try:
            verified = client.attach(breakpoints={str(SCENARIO): breakpoints()}, justMyCode=True)
            stops, logged, filter_stats = [], [], None
            for step in STEPS:
                stop = wait_stop(client)
                if kind == "fastattach" and not stops:
                    filter_stats = breakpoint_filter_stats(client, stop.frame_id)
                stops.append((stop.reason, stop.line, stop.function))
                logged += outputs(client)
                client.request(step, {"threadId": stop.thread_id})
            returncode = server.wait()
            logged += outputs(client)
            client.disconnect()
        finally:
            client.close()
        return {
            "capabilities": client.capabilities,
            "verified": [(bp["verified"], bp.get("line")) for bp in verified[str(SCENARIO)]],
            "stops": stops,
            "filter_stats": filter_stats,
            "stderr": server.stderr(),
            "logpoints": [text for text in logged if text.startswith("LOG ")],
            "returncode": returncode,
            "stdout": server.stdout(),
            "transcript": client.transcript,
        }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {kind: run_scenario(kind, tmp_path_factory.mktemp(kind)) for kind in ("debugpy", "fastattach")}


@pytest.mark.timeout(180)
def test_stop_sequence_matches_debugpy(runs):
    reference, ours = runs["debugpy"], runs["fastattach"]
    # The reference itself did what the scenario means, so equality is not vacuous.
    assert reference["stops"][:4] == [
        ("breakpoint", marker_line(SCENARIO, "MARK-COND"), "main"),
        ("breakpoint", marker_line(SCENARIO, "MARK-HIT"), "main"),
        ("breakpoint", marker_line(SCENARIO, "MARK-PLAIN"), "main"),
        ("step", marker_line(SCENARIO, "MARK-STEPIN"), "main"),
    ]
    assert [function for _, _, function in reference["stops"]].count("add") == 2
    assert ours["stops"] == reference["stops"]


@pytest.mark.timeout(180)
def test_fastattach_run_went_through_the_c_filter(runs):
    # Equal stops prove something only if our filter, not plain pydevd, made them.
    stats = runs["fastattach"]["filter_stats"]
    assert stats is not None, "the breakpoint filter was not installed:\n" + runs["fastattach"]["stderr"]
    assert stats["condition_false"] >= 1, stats


@pytest.mark.timeout(180)
def test_logpoint_output_matches_debugpy(runs):
    assert len(runs["debugpy"]["logpoints"]) == 5
    assert runs["fastattach"]["logpoints"] == runs["debugpy"]["logpoints"]


@pytest.mark.timeout(180)
def test_breakpoints_verified_like_debugpy(runs):
    assert runs["fastattach"]["verified"] == runs["debugpy"]["verified"]


def as_clients_read(capabilities):
    """A false or empty capability means the same to a client as a missing one, and the
    non-standard "pydevd" key is ignored by every client."""
    return {key: value for key, value in capabilities.items() if value not in (False, [], None) and key != "pydevd"}


@pytest.mark.timeout(180)
def test_capabilities_match_debugpy(runs):
    # Our relay answers initialize itself, and clients decide what to offer (terminate the
    # debuggee on disconnect, the exception filters' tooltips, ...) from this answer.
    ours = as_clients_read(runs["fastattach"]["capabilities"])
    reference = as_clients_read(runs["debugpy"]["capabilities"])
    differing = sorted(key for key in ours.keys() | reference.keys() if ours.get(key) != reference.get(key))
    assert not differing, {key: {"fastattach": ours.get(key), "debugpy": reference.get(key)} for key in differing}


@pytest.mark.timeout(180)
def test_debuggee_finishes_the_same_way(runs):
    for kind in ("debugpy", "fastattach"):
        assert runs[kind]["returncode"] == 0, runs[kind]["stdout"]
    assert runs["fastattach"]["stdout"] == runs["debugpy"]["stdout"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["debugpy", "fastattach"])
def test_sessions_follow_the_schema(runs, kind):
    assert_valid(runs[kind]["transcript"], allow_reordering=kind == "debugpy")


def corner_breakpoints():
    line = lambda marker: marker_line(SCENARIO, marker)  # noqa: E731
    return [
        {"line": line("MARK-ADD-BODY"), "condition": "undefined_name > 0"},
        {"line": line("MARK-HIT"), "condition": "j >= 3", "hitCondition": "2"},
        {"line": line("MARK-PLAIN"), "logMessage": "plain {total} {1/0}"},
        {"line": line("MARK-SCALE-BODY"), "condition": "value > 1000"},
    ]


def run_corner_scenario(kind, out_dir, max_stops=20):
    """Continue from every stop until the program ends; return the stops and all output."""
    with DebugServer(kind, SCENARIO, out_dir=out_dir) as server:
        client = DAPClient.connect(*server.address, timeout=20)
        try:
            client.attach(breakpoints={str(SCENARIO): corner_breakpoints()},
                          function_breakpoints=[{"name": "check_positive"}], exception_filters=["raised"])
            stops, printed = [], []
            while server.process.poll() is None and len(stops) < max_stops:
                try:
                    stop = wait_stop(client, timeout=0.5)
                except DAPError:
                    continue  # still running, or ended: the loop condition decides
                stops.append((stop.reason, stop.line, stop.function))
                printed += outputs(client)
                client.request("continue", {"threadId": stop.thread_id})
            returncode = server.wait()
            printed += outputs(client)
            client.disconnect()
        finally:
            client.close()
        return {"stops": stops, "output": [text for text in printed if not text.startswith(("RESULT", "DONE"))],
                "returncode": returncode, "stdout": server.stdout(), "transcript": client.transcript}


@pytest.fixture(scope="module")
def corner_runs(tmp_path_factory):
    return {kind: run_corner_scenario(kind, tmp_path_factory.mktemp(f"corner-{kind}"))
            for kind in ("debugpy", "fastattach")}


@pytest.mark.timeout(180)
def test_corner_cases_match_debugpy(corner_runs):
    reference, ours = corner_runs["debugpy"], corner_runs["fastattach"]
    reasons = [reason for reason, _, _ in reference["stops"]]
    assert {"breakpoint", "function breakpoint", "exception"} <= set(reasons), reference["stops"]
    assert ours["stops"] == reference["stops"]
    assert ours["output"] == reference["output"]
    for run in (reference, ours):
        assert run["returncode"] == 0, run["stdout"]
    assert ours["stdout"] == reference["stdout"]
    assert_valid(ours["transcript"])
    assert_valid(reference["transcript"], allow_reordering=True)

"""End-to-end DAP sessions with the raw-socket client against ``python -m fastattach``.

Each test runs a debuggee from tests/targets under the CLI in a subprocess, drives a
whole session over TCP, checks what the debuggee printed and its exit status, and
validates every message of the session against the DAP schema.
"""

from __future__ import annotations

import shutil

import pytest
from _e2e import SERVER, DebugServer, breakpoint_filter_stats, marker_line, outputs, target, variables, wait_stop
from dap_schema import assert_valid

from fastattach.net.client import DAPClient

pytestmark = pytest.mark.timeout(120)

SCENARIO = target("scenario.py")
TICKER = target("ticker.py")


@pytest.fixture
def start_server(tmp_path):
    """start_server(script, *args) -> DebugServer, stopped (by PID) after the test."""
    servers = []

    def start(script, *args, **options):
        server = DebugServer(SERVER, script, *args, out_dir=tmp_path, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def connect(closing):
    """connect(server) -> DAPClient, closed after the test."""
    def open_client(server):
        return closing(DAPClient.connect(*server.address, timeout=20))

    return open_client


@pytest.fixture
def ticker(start_server, tmp_path):
    """A running tests/targets/ticker.py; ``ticker.stop_file.touch()`` lets it end."""
    stop_file = tmp_path / "stop-ticker"
    server = start_server(TICKER, str(stop_file))
    server.stop_file = stop_file
    return server


def attach_and_stop_at_tick(client):
    """Attach with a breakpoint on the ticker's loop line; the stop and the tick it shows."""
    client.attach(breakpoints={str(TICKER): [{"line": line("MARK-TICK", TICKER)}]})
    stop = wait_stop(client)
    assert (stop.reason, stop.line) == ("breakpoint", line("MARK-TICK", TICKER))
    return stop, int(client.evaluate("tick", stop.frame_id))


def check_transcript(client):
    # Plain debugpy may put two seqs in the wrong order on the wire; our relay never may.
    assert_valid(client.transcript, allow_reordering=SERVER == "debugpy")


def line(marker, script=SCENARIO):
    return marker_line(script, marker)


def test_initialize_advertises_what_editors_need(start_server, connect):
    # GIVEN a debuggee waiting for a client
    server = start_server(SCENARIO)
    client = connect(server)
    # WHEN a client sends initialize
    capabilities = client.initialize()["body"]
    # THEN the features clients check before offering them are advertised
    for feature in ("supportsConfigurationDoneRequest", "supportsConditionalBreakpoints",
                    "supportsHitConditionalBreakpoints", "supportsLogPoints", "supportsFunctionBreakpoints",
                    "supportsExceptionInfoRequest"):
        assert capabilities.get(feature) is True, feature
    assert {"raised", "uncaught"} <= {f["filter"] for f in capabilities["exceptionBreakpointFilters"]}
    # and the debuggee runs on once the session is configured and left
    client.attach()
    client.disconnect()
    assert server.wait() == 0, server.output()
    assert "RESULT 20 21 63 40 10 alpha 33 True" in server.stdout()
    check_transcript(client)


def test_breakpoints_inspection_and_stepping(start_server, connect):
    # GIVEN a debuggee and a client attached with every kind of breakpoint
    server = start_server(SCENARIO)
    client = connect(server)
    path = str(SCENARIO)
    verified = client.attach(
        breakpoints={path: [
            {"line": line("MARK-LOGPOINT"), "logMessage": "LOG i={i} total={total}"},
            {"line": line("MARK-COND"), "condition": "i == 3"},
            {"line": line("MARK-HIT"), "hitCondition": "3"},
            {"line": line("MARK-PLAIN")},
        ]},
        function_breakpoints=[{"name": "scale"}],
        exception_filters=["raised"],
        connect={"host": server.address[0], "port": server.address[1]},
        justMyCode=True,
    )
    assert [bp["verified"] for bp in verified[path]] == [True] * 4

    # THEN the condition stops only when it is true, with the program state visible
    stop = wait_stop(client)
    assert (stop.reason, stop.line, stop.function) == ("breakpoint", line("MARK-COND"), "main")
    threads = client.request("threads")["body"]["threads"]
    assert stop.thread_id in [t["id"] for t in threads]
    local = variables(client, stop.frame_id)
    assert (local["i"], local["total"]) == ("3", "6")
    assert client.evaluate("total * 10", stop.frame_id) == "60"
    if SERVER == "fastattach":
        # and it was our C filter, not pydevd, that let i == 0, 1, 2 pass
        stats = breakpoint_filter_stats(client, stop.frame_id)
        assert stats is not None, "the breakpoint filter is not installed:\n" + server.stderr()
        assert stats["condition_false"] >= 1, stats

    # the hit condition stops on the third hit only
    client.request("continue", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert (stop.reason, stop.line) == ("breakpoint", line("MARK-HIT"))
    assert client.evaluate("j", stop.frame_id) == "2"

    # the logpoint printed on each of its five hits and never stopped
    client.request("continue", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert (stop.reason, stop.line) == ("breakpoint", line("MARK-PLAIN"))
    logged = [text for text in outputs(client) if text.startswith("LOG ")]
    assert logged == [f"LOG i={i} total={t}\n" for i, t in enumerate([0, 0, 1, 3, 6])]
    if SERVER == "fastattach":
        assert breakpoint_filter_stats(client, stop.frame_id)["line_disable"] >= 1

    # next, stepIn, stepOut move where Python would
    client.request("next", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert (stop.reason, stop.line, stop.function) == ("step", line("MARK-STEPIN"), "main")
    client.request("stepIn", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert (stop.reason, stop.line, stop.function) == ("step", line("MARK-ADD-BODY"), "add")
    assert variables(client, stop.frame_id) == {"a": "20", "b": "1"}
    client.request("stepOut", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert (stop.reason, stop.line, stop.function) == ("step", line("MARK-STEPIN"), "main")

    # the function breakpoint stops inside scale
    client.request("continue", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert (stop.reason, stop.line, stop.function) == ("function breakpoint", line("MARK-SCALE-DEF"), "scale")

    # the "raised" filter stops on a caught exception, and exceptionInfo describes it
    client.request("continue", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert (stop.reason, stop.line, stop.function) == ("exception", line("MARK-RAISE"), "check_positive")
    info = client.request("exceptionInfo", {"threadId": stop.thread_id})["body"]
    assert (info["exceptionId"], info["description"]) == ("ValueError", "negative: -1")

    # WHEN the client disconnects while the debuggee is stopped
    client.disconnect()
    # THEN the debuggee resumes and finishes normally
    assert server.wait() == 0, server.output()
    assert "RESULT 20 21 63 40 10 alpha 33 True" in server.stdout()
    check_transcript(client)


def test_path_mappings_and_just_my_code_off(start_server, connect, tmp_path):
    # GIVEN the client's copy of the source in another directory, mapped onto the debuggee's
    client_root = tmp_path / "client-checkout"
    client_root.mkdir()
    client_copy = client_root / SCENARIO.name
    shutil.copy(SCENARIO, client_copy)
    server = start_server(SCENARIO)
    client = connect(server)
    verified = client.attach(
        breakpoints={str(client_copy): [{"line": line("MARK-LIBCALL")}]},
        pathMappings=[{"localRoot": str(client_root), "remoteRoot": str(SCENARIO.parent)}],
        justMyCode=False,
    )
    assert verified[str(client_copy)][0]["verified"] is True

    # WHEN the breakpoint in the client's path is hit
    stop = wait_stop(client)
    # THEN frames are reported in the client's paths
    assert (stop.line, stop.path) == (line("MARK-LIBCALL"), str(client_copy))

    # and with justMyCode off, stepIn enters the standard library
    client.request("stepIn", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert stop.function == "dumps"
    assert stop.path.replace("\\", "/").endswith("json/__init__.py")
    client.request("stepOut", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    assert (stop.function, stop.path) == ("main", str(client_copy))

    client.disconnect()
    assert server.wait() == 0, server.output()
    check_transcript(client)


def test_just_my_code_steps_over_library_calls(start_server, connect):
    server = start_server(SCENARIO)
    client = connect(server)
    client.attach(breakpoints={str(SCENARIO): [{"line": line("MARK-LIBCALL")}]}, justMyCode=True)
    stop = wait_stop(client)
    assert stop.line == line("MARK-LIBCALL")
    # WHEN stepping into a standard-library call with justMyCode on
    client.request("stepIn", {"threadId": stop.thread_id})
    stop = wait_stop(client)
    # THEN the step stays in the user's code
    assert (stop.function, stop.path) == ("main", str(SCENARIO))
    assert stop.line > line("MARK-LIBCALL")
    client.disconnect()
    assert server.wait() == 0, server.output()
    check_transcript(client)


def test_uncaught_exception_filter(start_server, connect):
    # GIVEN a debuggee that catches one exception and then dies of another
    script = target("uncaught.py")
    server = start_server(script)
    client = connect(server)
    client.attach(exception_filters=["uncaught"])
    # THEN only the uncaught one stops the debuggee
    stop = wait_stop(client)
    assert stop.reason == "exception"
    info = client.request("exceptionInfo", {"threadId": stop.thread_id})["body"]
    assert (info["exceptionId"], info["breakMode"]) == ("ValueError", "unhandled")
    # and after continue the program dies of it as it would without a debugger
    client.request("continue", {"threadId": stop.thread_id})
    client.wait_event("terminated", timeout=20)
    client.disconnect()
    assert server.wait() == 1, server.output()
    assert "ValueError: boom" in server.stderr()
    check_transcript(client)


def test_disconnect_then_a_new_client_pauses_and_hits_a_breakpoint(ticker, connect):
    server, tick_line = ticker, line("MARK-TICK", TICKER)

    # GIVEN a first client that stopped at a breakpoint and then left
    first = connect(server)
    _, first_tick = attach_and_stop_at_tick(first)
    first.disconnect()
    check_transcript(first)
    # THEN the debuggee runs on with no client
    server.wait_for_stdout(rf"^TICK {20 * (first_tick // 20 + 1)}$")

    # WHEN a new client attaches to the still-running debuggee, without breakpoints
    second = connect(server)
    second.attach()
    assert server.process.poll() is None, server.output()
    main_thread = [t for t in second.request("threads")["body"]["threads"] if t["name"] == "MainThread"]
    assert len(main_thread) == 1

    # THEN pause stops the running program where it has got to
    second.request("pause", {"threadId": main_thread[0]["id"]})
    stop = wait_stop(second)
    assert (stop.reason, stop.function) == ("pause", "run")
    assert int(second.evaluate("tick", stop.frame_id)) > first_tick

    # and a breakpoint set now is hit
    second.set_breakpoints(str(TICKER), [{"line": tick_line}])
    second.request("continue", {"threadId": stop.thread_id})
    stop = wait_stop(second)
    assert (stop.reason, stop.line) == ("breakpoint", tick_line)

    # and once the breakpoints are cleared and the client leaves, the program ends normally
    second.set_breakpoints(str(TICKER), [])
    second.request("continue", {"threadId": stop.thread_id})
    second.disconnect()
    server.stop_file.touch()
    assert server.wait() == 0, server.output()
    assert "TICKER-DONE" in server.stdout()
    check_transcript(second)


def test_threads_each_stop_at_a_breakpoint(start_server, connect):
    # GIVEN four live worker threads that reach the same breakpoint in turn
    script = target("threads.py")
    server = start_server(script, "4")
    client = connect(server)
    client.attach(breakpoints={str(script): [{"line": line("MARK-WORKER", script)}]})

    # THEN each worker stops there, is inspected in its own frame, and the thread list
    # holds every worker at each stop
    seen = []
    for index in range(4):
        stop = wait_stop(client)
        assert (stop.reason, stop.function) == ("breakpoint", "work")
        names = {t["id"]: t["name"] for t in client.request("threads")["body"]["threads"]}
        assert names[stop.thread_id] == f"worker-{index}"
        assert {f"worker-{n}" for n in range(index, 4)} <= set(names.values())
        assert client.evaluate("index", stop.frame_id) == str(index)
        seen.append(stop.thread_id)
        client.request("continue", {"threadId": stop.thread_id})
    assert len(set(seen)) == 4

    client.disconnect()
    assert server.wait() == 0, server.output()
    assert "RESULTS [0, 1, 4, 9]" in server.stdout()
    check_transcript(client)


def test_breakpoints_changed_while_running(ticker, connect):
    server = ticker
    tick_line, return_line = line("MARK-TICK", TICKER), line("MARK-RETURN", TICKER)

    # GIVEN a running loop whose function has a breakpoint only on a line not reached yet,
    # so every line of the loop has been run (and, with fastattach, disabled) many times
    client = connect(server)
    client.attach(breakpoints={str(TICKER): [{"line": return_line}]})
    ticks_seen = int(server.wait_for_stdout(r"^TICK (\d+)$").group(1))
    server.wait_for_stdout(rf"^TICK {ticks_seen + 40}$")

    # WHEN a conditional breakpoint is added to the loop while it runs
    client.set_breakpoints(str(TICKER), [{"line": return_line}, {"line": tick_line, "condition": "tick % 7 == 6"}])
    # THEN it stops there, where the condition holds
    stop = wait_stop(client)
    assert (stop.reason, stop.line) == ("breakpoint", tick_line)
    first = int(client.evaluate("tick", stop.frame_id))
    assert first % 7 == 6

    # WHEN the condition is changed
    client.set_breakpoints(str(TICKER), [{"line": return_line},
                                         {"line": tick_line, "condition": f"tick % 5 == 4 and tick > {first + 20}"}])
    client.request("continue", {"threadId": stop.thread_id})
    # THEN the new condition applies
    stop = wait_stop(client)
    second = int(client.evaluate("tick", stop.frame_id))
    assert second % 5 == 4 and second > first + 20
    if SERVER == "fastattach":
        assert breakpoint_filter_stats(client, stop.frame_id)["condition_false"] >= 1

    # WHEN the loop's breakpoint is removed
    client.set_breakpoints(str(TICKER), [{"line": return_line}])
    client.request("continue", {"threadId": stop.thread_id})
    # THEN the loop runs on without stopping
    server.wait_for_stdout(rf"^TICK {20 * (second // 20 + 3)}$")
    assert client.events("stopped") == []
    # and the breakpoint that stayed is hit when the loop ends
    server.stop_file.touch()
    stop = wait_stop(client)
    assert (stop.reason, stop.line) == ("breakpoint", return_line)
    assert int(client.evaluate("tick", stop.frame_id)) > second + 40
    client.request("continue", {"threadId": stop.thread_id})
    assert server.wait() == 0, server.output()
    client.disconnect()
    check_transcript(client)


def test_condition_picks_one_thread_among_many_in_a_hot_loop(start_server, connect):
    # GIVEN four threads running the same loop at once, and a breakpoint on the loop line
    # whose condition holds for one iteration of one thread
    script = target("busy_threads.py")
    server = start_server(script, "4", "300")
    client = connect(server)
    busy, after = line("MARK-BUSY", script), line("MARK-BUSY-NEXT", script)
    client.attach(breakpoints={str(script): [{"line": busy, "condition": "index == 2 and n == 150"}]})

    # THEN only that thread stops, in that iteration
    stop = wait_stop(client)
    assert (stop.reason, stop.line) == ("breakpoint", busy)
    assert (client.evaluate("index", stop.frame_id), client.evaluate("n", stop.frame_id)) == ("2", "150")
    # and stepping that thread while the others race through the same line stops only it
    client.request("next", {"threadId": stop.thread_id})
    step = wait_stop(client)
    assert (step.thread_id, step.reason, step.line) == (stop.thread_id, "step", after)
    assert client.evaluate("n", step.frame_id) == "150"
    client.request("continue", {"threadId": step.thread_id})

    total = sum(range(300))
    assert server.wait() == 0, server.output()
    assert f"TOTALS {[total] * 4}" in server.stdout()
    assert client.events("stopped") == []
    client.disconnect()
    check_transcript(client)


def test_a_client_that_vanishes_while_stopped_releases_the_debuggee(ticker, connect):
    server = ticker
    # GIVEN a client stopped at a breakpoint
    gone = connect(server)
    _, tick = attach_and_stop_at_tick(gone)
    # WHEN the editor dies without a disconnect request
    gone.close()
    # THEN the debuggee runs on, and the next client can debug it
    server.wait_for_stdout(rf"^TICK {20 * (tick // 20 + 2)}$")
    client = connect(server)
    _, later_tick = attach_and_stop_at_tick(client)
    assert later_tick > tick
    client.disconnect()
    server.stop_file.touch()
    assert server.wait() == 0, server.output()
    check_transcript(client)


def test_attach_to_a_program_that_is_already_running(start_server, connect, tmp_path):
    # GIVEN a program started with a listener but without waiting for a client
    stop_file = tmp_path / "stop-ticker"
    server = start_server(TICKER, str(stop_file), wait_for_client=False)
    server.wait_for_stdout(r"^TICK 40$")
    # WHEN a client attaches later with a breakpoint in the running loop
    client = connect(server)
    stop, tick = attach_and_stop_at_tick(client)
    # THEN it stops there, far into the run
    assert tick >= 40
    assert stop.function == "run"
    client.set_breakpoints(str(TICKER), [])
    client.request("continue", {"threadId": stop.thread_id})
    client.disconnect()
    stop_file.touch()
    assert server.wait() == 0, server.output()
    check_transcript(client)


def test_disconnect_with_terminate_debuggee_ends_the_program(ticker, connect):
    # GIVEN a client stopped in a program that would otherwise run on
    client = connect(ticker)
    attach_and_stop_at_tick(client)
    # WHEN it disconnects asking to terminate the debuggee
    response = client.request("disconnect", {"terminateDebuggee": True})
    client.close()
    # THEN the program ends there, without running to its own end
    assert response["success"] is True
    ticker.wait(30)
    assert "TICKER-DONE" not in ticker.stdout()
    check_transcript(client)

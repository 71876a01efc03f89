"""Emacs dap-mode, a real editor client, debugs a program under ``python -m fastattach``.

dap-mode attaches with the configuration its users write for debugpy, through a tap
that records the traffic; the tap's log must pass the schema check too, since dap-mode
itself accepts malformed messages (research/dap-clients.md section 6).
"""

from __future__ import annotations

import pytest
from _e2e import SERVER, DebugServer, target
from _tap import DAPTap
from dap_schema import assert_valid
from emacs.runner import missing_capability, run_dap_mode

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(missing_capability() is not None, reason=str(missing_capability())),
]

EXPECTED_CHECKS = [
    "setBreakpoints: 3 verified",
    "stop 1 at the conditional breakpoint, point on its line",
    "Locals shows i: 3 and total: 6",
    "REPL: total * 10 -> 60",
    "continue -> stop 2 at the plain breakpoint",
    "logpoint printed 5 times and never stopped",
    "dap-next -> the next line",
    "dap-step-in -> add() with a: 20, b: 1",
    "REPL: a + b -> 21",
    "dap-disconnect ends the session",
]


def test_dap_mode_session(tmp_path):
    script = target("scenario.py")
    # GIVEN a debuggee waiting for a client, with a tap in front of it
    with DebugServer(SERVER, script, out_dir=tmp_path) as server, \
            DAPTap(server.address, tmp_path / "dap.jsonl") as tap:
        # WHEN dap-mode sets breakpoints (a logpoint, a condition, a plain one), attaches,
        # inspects, evaluates in its REPL, continues, steps and disconnects
        result = run_dap_mode(*tap.address, script, tmp_path, timeout=150)
        # THEN every check of the driver passed
        assert result.ok, result
        assert [c["name"] for c in result.checks] == EXPECTED_CHECKS, result
        # and the debuggee ran to its normal end after the disconnect
        assert server.wait(30) == 0, server.output()
        assert "RESULT 20 21 63 40 10 alpha 33 True" in server.stdout()
        assert "breakpoint filter not installed" not in server.stderr()
        tap.close()
    # and every message dap-mode and the server exchanged follows the schema
    report = assert_valid(tap.records, allow_reordering=SERVER == "debugpy")
    requests = {m["command"] for m in tap.messages("c2s") if m["type"] == "request"}
    assert {"initialize", "attach", "setBreakpoints", "configurationDone", "stackTrace", "scopes",
            "variables", "evaluate", "continue", "next", "stepIn", "disconnect"} <= requests, requests
    assert report.messages == len(tap.records)

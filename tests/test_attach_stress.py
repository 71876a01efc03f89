"""Attach, debug, detach and stop() many times into each target state: no crash, no hang, ever,
and after every stop() nothing is left in the target's sys.monitoring and no debugger thread.

The count is FASTATTACH_ATTACH_STRESS (default 5 here, so the suite stays short); the full 50
per state runs as ``python benchmarks/bench_attach.py --stress 50`` and its result is kept in
benchmarks/results/attach.md.
"""

from __future__ import annotations

import os

import pytest
from targets.attach_harness import LINUX_X86_64_ONLY, STATES, stress

COUNT = int(os.environ.get("FASTATTACH_ATTACH_STRESS", "5"))

pytestmark = LINUX_X86_64_ONLY


@pytest.mark.parametrize("state", STATES)
def test_attach_debug_detach_repeatedly(state, tmp_path):
    # GIVEN one long-lived target; WHEN we attach, debug, detach and stop() COUNT times
    result = stress(state, COUNT, tmp_path)
    # THEN every cycle worked and left nothing behind (stress() checks each one and raises
    # on the first failure), and the target is still running
    assert len(result["durations"]) == COUNT

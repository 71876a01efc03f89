"""Several orchestrators attaching to one process at once take turns: the first starts the
listener, the later ones report that same listener, and every one succeeds."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from targets.attach_harness import (  # noqa: F401 (cleanup is a fixture)
    LINUX_X86_64_ONLY,
    cleanup,
    debug_session,
    start_controlled,
)

pytestmark = LINUX_X86_64_ONLY


# busy: a safe-point delivery (the main thread runs Python); sleep: ptrace, one tracer at a time.
@pytest.mark.parametrize("state", ["busy", "sleep"])
def test_three_attaches_at_once_all_report_the_one_listener(state, cleanup, tmp_path):
    target, controller = start_controlled(state, tmp_path)
    cleanup.append(target)
    # WHEN three `--pid` attaches start at the same moment
    attaches = [subprocess.Popen([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--pid",
                                  str(target.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
    outcomes = [attach.communicate(timeout=90) + (attach.returncode,) for attach in attaches]
    # THEN each one succeeds and names the same listener, which serves a debug session
    assert [code for _, _, code in outcomes] == [0, 0, 0], outcomes
    ports = {int(re.search(r"listening on 127\.0\.0\.1:(\d+) in PID", out).group(1)) for out, _, _ in outcomes}
    assert len(ports) == 1, outcomes
    assert debug_session("127.0.0.1", ports.pop(), controller).endswith(f"-{target.pid}")
    target.assert_healthy()

"""Fixtures shared by every test: each test must leave sys.monitoring as it found it."""

from __future__ import annotations

import os
import sys
import time

import pytest
from hypothesis import Phase, settings

# Hypothesis's explain phase (hypothesis/internal/scrutineer.py) claims sys.monitoring tool
# 3 and, on 3.12/3.13, frees it with its LINE events still set; the check below would
# then blame the next test.  The fuzz tests do not need the explanation.
settings.register_profile("fastattach", phases=tuple(phase for phase in Phase if phase is not Phase.explain))
settings.load_profile("fastattach")

# Tool ids fastattach or pydevd may claim: pydevd uses 0; our own probes would use 3 or 4.
WATCHED_TOOL_IDS = (0, 3, 4)


def monitoring_leftovers() -> list[str]:
    leftovers = []
    for tool_id in WATCHED_TOOL_IDS:
        name = sys.monitoring.get_tool(tool_id)
        if name is not None:
            leftovers.append(f"tool {tool_id} still claimed by {name!r}")
        elif sys.monitoring.get_events(tool_id):
            leftovers.append(f"tool {tool_id} still has events {sys.monitoring.get_events(tool_id):#x}")
    return leftovers


@pytest.fixture(autouse=True)
def _monitoring_left_clean():
    """After each test, nothing fastattach or pydevd registered may remain (CPython's
    test_monitoring checks the same in MonitoringTestBase.tearDown)."""
    assert not monitoring_leftovers(), "a previous test left monitoring state behind"
    saved_path = list(sys.path)
    saved_env = dict(os.environ)
    yield
    leftovers = monitoring_leftovers()
    if leftovers:
        import fastattach

        fastattach.stop()
        for tool_id in WATCHED_TOOL_IDS:
            if sys.monitoring.get_tool(tool_id) is not None:
                sys.monitoring.free_tool_id(tool_id)
        pytest.fail("test left sys.monitoring state behind: " + "; ".join(leftovers))
    sys.path[:] = saved_path
    os.environ.clear()
    os.environ.update(saved_env)


def wait_until(predicate, timeout=20.0, what="condition"):
    """Poll `predicate` until it is true; fail naming `what` after `timeout` seconds (a bound
    on a wait, never a measurement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def closing():
    """closing(thing) -> thing; every thing is closed after the test, the last one first.

    What the test made (listeners, clients, servers) goes away even when an assertion fails.
    """
    things = []

    def close_after(thing):
        things.append(thing)
        return thing

    yield close_after
    for thing in reversed(things):
        thing.close()


@pytest.fixture(autouse=True)
def switch_interval():
    """The process's GIL switch interval before the test (fastattach shortens it while it
    starts and while a client is attached); put back after every test, whatever it did."""
    saved = sys.getswitchinterval()
    yield saved
    sys.setswitchinterval(saved)

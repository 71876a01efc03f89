"""Code under fresh file names keeps no state of ours or pydevd's while it has no breakpoint.

Template engines, notebooks and code generators compile code under a new file name each
time. With a client attached and breakpoints only elsewhere, every such file name used to
stay in pydevd's path caches (reached from the gate's per-code decision), so memory grew
with every new name. The code runs on a worker thread of this process, attached through a
real client to the real pydevd; what is counted is the caches' entries and the memory
tracemalloc sees, not time.
"""

from __future__ import annotations

import gc
import os
import threading
import tracemalloc

import pytest
from test_gate import NEVER_LINE, THIS_FILE, attach, session, unlimited_condition_budget  # noqa: F401

BATCH = 400


def run_fresh_code(names):
    """Compiles and runs one small function under each name, on a worker thread."""
    def work():
        for name in names:
            namespace = {}
            exec(compile("def generated(x):\n    y = x + 1\n    return y * 2\n", name, "exec"), namespace)
            assert namespace["generated"](3) == 8
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()


def path_caches():
    import pydevd_file_utils

    caches = {name: len(getattr(pydevd_file_utils, name))
              for name in ("NORM_PATHS_CONTAINER", "NORM_PATHS_AND_BASE_CONTAINER")}
    caches["NORMCASE_CACHE"] = len(pydevd_file_utils.normcase.__defaults__[0])
    return caches


@pytest.mark.parametrize("style", ["absolute", "relative", "synthetic"])
def test_fresh_file_names_without_breakpoints_leave_no_cache_entries(session, tmp_path, style):  # noqa: F811
    # GIVEN a client attached with a breakpoint in another file only
    attach(session, [{"line": NEVER_LINE}])
    spelled = {"absolute": lambda i: str(tmp_path / f"generated_{i}.py"),
               "relative": lambda i: f"generated/template_{i}.py",
               "synthetic": lambda i: f"<template {i}>"}[style]
    run_fresh_code([spelled(-1)])   # whatever a first run of such code loads once
    before = path_caches()
    # WHEN code runs under a few hundred fresh file names
    run_fresh_code([spelled(i) for i in range(BATCH)])
    # THEN pydevd's path caches hold none of those names
    assert path_caches() == before


def test_memory_does_not_grow_with_each_fresh_file_name(session, tmp_path):  # noqa: F811
    attach(session, [{"line": NEVER_LINE}])
    run_fresh_code([str(tmp_path / f"warmup_{i}.py") for i in range(BATCH)])
    # Only what the debugger keeps: memory allocated with pydevd or fastattach's engine on
    # the stack (not the test's own client, whose buffers come and go).
    debugger = [tracemalloc.Filter(True, f"*{os.sep}{part}{os.sep}*", all_frames=True)
                for part in ("pydevd", "engine")]
    tracemalloc.start(30)
    try:
        gc.collect()
        before = tracemalloc.take_snapshot().filter_traces(debugger)
        run_fresh_code([str(tmp_path / f"fresh_{i}.py") for i in range(BATCH)])
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(debugger)
    finally:
        tracemalloc.stop()
    growth = after.compare_to(before, "traceback")
    grown = sum(stat.size_diff for stat in growth)
    # A leak keeps each name and its normalised forms, a few hundred bytes per name.
    assert grown / BATCH < 16, "\n".join(f"{stat}\n" + "\n".join(stat.traceback.format()[-6:])
                                         for stat in growth[:3])


def run_until_stopped(client, source, compiled_as):
    result = {}

    def work():
        namespace = {}
        exec(compile(source.read_text(), compiled_as, "exec"), namespace)
        result["value"] = namespace["generated"](3)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    stopped = client.wait_stopped(timeout=30)
    assert stopped["reason"] == "breakpoint"
    client.request("continue", {"threadId": stopped["threadId"]})
    thread.join(30)
    assert result["value"] == 8


@pytest.mark.parametrize("compiled_as", ["the file", "a symlink to it", "its .pyc"])
def test_a_breakpoint_in_a_fresh_file_still_stops(session, tmp_path, compiled_as):  # noqa: F811
    # The caches are skipped only for names that cannot have a breakpoint; a name pydevd
    # resolves to a file with one (a symlink of another name, a .pyc) still stops there.
    source = tmp_path / "generated_with_breakpoint.py"
    source.write_text("def generated(x):\n    y = x + 1\n    return y * 2\n")
    name = os.fspath(source)
    if compiled_as == "a symlink to it":
        name = os.fspath(tmp_path / "template_output.py")
        os.symlink(source, name)
    elif compiled_as == "its .pyc":
        name += "c"
    session.attach(breakpoints={os.fspath(source): [{"line": 2}], THIS_FILE: [{"line": NEVER_LINE}]},
                   stopAllThreadsOnSuspend=False, justMyCode=False)
    run_until_stopped(session, source, name)

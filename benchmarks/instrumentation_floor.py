"""What a never-hit breakpoint costs before any debugger code runs: CPython's own floor.

A line breakpoint in a function makes the debugger (pydevd, behind fastattach's filter
too) turn on LINE events for that function's code object.  fastattach answers every
line with DISABLE in C, yet the function can stay measurably slower.  This script
shows that the remainder is CPython's: with no debugger at all, a plain
sys.monitoring tool puts LINE (then JUMP, then both) on the workload's hottest
function, answers every event with DISABLE, and the unit of work is timed against
the same process with no events.  Process CPU time, best of 7, after one warm-up.

    python benchmarks/instrumentation_floor.py [WORKLOAD ...]   (default: regex_compile richards)
"""

from __future__ import annotations

import gc
import os
import sys
import time
import types

from fastattach.bench.lines import choose_lines
from fastattach.bench.target import count_lines, load_workload


def best_cpu_seconds(unit, repeat: int = 7) -> float:
    unit()
    times = []
    for _ in range(repeat):
        started = time.process_time()
        unit()
        times.append(time.process_time() - started)
    return min(times)


def find_code(path: str, qualname: str) -> types.CodeType:
    for candidate in gc.get_objects():
        if (isinstance(candidate, types.FunctionType) and candidate.__code__.co_qualname == qualname
                and os.path.abspath(candidate.__code__.co_filename) == path):
            return candidate.__code__
    raise LookupError(f"no function {qualname} in {path}")


def measure(workload: str) -> None:
    _, unit = load_workload(workload)
    plan = choose_lines(count_lines(unit, excluded_files=set()))
    code = find_code(plan.hot_file, plan.hot_function)
    monitoring = sys.monitoring
    events = monitoring.events
    tool = next(t for t in range(5, 0, -1) if monitoring.get_tool(t) is None)
    baseline = best_cpu_seconds(unit)
    print(f"{workload} ({sys.version.split()[0]}): hottest function {plan.hot_function}, "
          f"no events {baseline * 1e3:.1f} ms")
    monitoring.use_tool_id(tool, "instrumentation-floor")
    try:
        monitoring.register_callback(tool, events.LINE, lambda code, line: monitoring.DISABLE)
        monitoring.register_callback(tool, events.JUMP, lambda code, src, dst: monitoring.DISABLE)
        for name, mask in (("LINE", events.LINE), ("JUMP", events.JUMP), ("LINE|JUMP", events.LINE | events.JUMP)):
            monitoring.set_local_events(tool, code, mask)
            seconds = best_cpu_seconds(unit)
            monitoring.set_local_events(tool, code, 0)
            monitoring.restart_events()
            print(f"  {name:9} on it, every event DISABLEd: {seconds * 1e3:.1f} ms = {seconds / baseline:.2f}x")
        # What pydevd sets globally once any line breakpoint exists: PY_START (answered
        # with DISABLE per code object) and PY_RESUME, for which it registers no callback.
        monitoring.register_callback(tool, events.PY_START, lambda code, offset: monitoring.DISABLE)
        for name, local in (("global PY_START (DISABLEd) | PY_RESUME (no callback)", 0),
                            ("the same plus LINE|JUMP on it, as pydevd arms it", events.LINE | events.JUMP)):
            monitoring.set_events(tool, events.PY_START | events.PY_RESUME)
            monitoring.set_local_events(tool, code, local)
            seconds = best_cpu_seconds(unit)
            monitoring.set_local_events(tool, code, 0)
            monitoring.set_events(tool, 0)
            monitoring.restart_events()
            print(f"  {name}: {seconds * 1e3:.1f} ms = {seconds / baseline:.2f}x")
        monitoring.register_callback(tool, events.PY_START, None)
    finally:
        monitoring.set_events(tool, 0)
        monitoring.register_callback(tool, events.PY_START, None)
        monitoring.register_callback(tool, events.LINE, None)
        monitoring.register_callback(tool, events.JUMP, None)
        monitoring.set_local_events(tool, code, 0)
        monitoring.free_tool_id(tool)
    print(f"  events removed again: {best_cpu_seconds(unit) / baseline:.2f}x")


if __name__ == "__main__":
    for name in sys.argv[1:] or ["regex_compile", "richards"]:
        measure(name)

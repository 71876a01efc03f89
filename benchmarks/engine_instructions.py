"""The C engine's event path alone, in instructions: what one LINE event on a line with a
false condition costs, counted by valgrind's callgrind, for one or more interpreters.

No pydevd and no DAP client: a Tracer for tool 4 wraps a do-nothing callback, and one
function runs a loop whose first line carries a breakpoint with a false condition (the
event is filtered in C and stays armed, so every iteration goes through the whole path:
Trampoline_vectorcall, slow-mode check, the per-code table, the breakpoint's budget, the
condition).  The other lines of the loop answer DISABLE once.  Each interpreter runs the
loop N1 and N2 times in fresh processes with the same hash seed; the difference of their
instruction counts over N2 - N1 is the cost of one event, start-up cancelled out (each
interpreter first runs once outside valgrind, so no counted run writes .pyc files).

    python benchmarks/engine_instructions.py [--n1 N] [--n2 N] [--mode M] [--path P] PYTHON [PYTHON ...]

Modes: "budget" (the breakpoint has a Budget, as every breakpoint fastattach makes
does) and "plain" (a condition-only breakpoint without one).  Paths: "fast" (the condition
compiled by engine/conditions.py, as fastattach compiles it: C calls it as a function of
the frame's variables) and "general" (a bare compile(): C evaluates it with the frame's
globals and locals, pydevd's eval).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

PROGRAM = r"""
import sys
from fastattach import _fasttrace

M = sys.monitoring
TOOL = 4

def loop(n):
    total = 0
    for i in range(n):
        total += i
        total ^= 1
    return total

BP_LINE = loop.__code__.co_firstlineno + 3
if sys.argv[3] == "fast":
    from fastattach.engine import conditions
    condition = conditions.compile_condition("i < 0", "<condition>")
else:
    _fasttrace.set_condition_compiler(None)
    condition = compile("i < 0", "<condition>", "eval")
budget = _fasttrace.Budget("spec", counts_evaluations=True) if sys.argv[1] == "budget" else None

def compute(code):
    if code is loop.__code__:
        return (False, ((BP_LINE, condition, budget),))
    return None

tracer = _fasttrace.Tracer(M.DISABLE, compute, lambda: False)
M.use_tool_id(TOOL, "engine_instructions")
M.register_callback(TOOL, M.events.LINE, tracer.trampoline(_fasttrace.LINE, lambda *args: None))
M.set_local_events(TOOL, loop.__code__, M.events.LINE)
loop(int(sys.argv[2]))
stats = tracer.stats()
assert stats["condition_false"] == int(sys.argv[2]) and stats["errors"] == 0, stats
assert stats["condition_fast"] == (int(sys.argv[2]) if sys.argv[3] == "fast" else 0), stats
M.set_local_events(TOOL, loop.__code__, 0)
M.register_callback(TOOL, M.events.LINE, None)
M.free_tool_id(TOOL)
"""


ENV = {"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"}


def warm_up(python: str) -> None:
    """One run outside valgrind, so that no counted run also writes .pyc files."""
    for path in ("fast", "general"):
        subprocess.run([python, "-c", PROGRAM, "budget", "10", path], check=True, env=ENV)


def instructions(python: str, mode: str, n: int, path: str) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, "-c", PROGRAM, mode, str(n),
               path]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if done.returncode != 0:
        raise RuntimeError(f"{python} {mode} {n}: {done.stderr[-2000:]}")
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n1", type=int, default=10_000)
    parser.add_argument("--n2", type=int, default=60_000)
    parser.add_argument("--mode", action="append", choices=("budget", "plain"))
    parser.add_argument("--path", action="append", choices=("fast", "general"))
    parser.add_argument("python", nargs="+")
    args = parser.parse_args(argv)
    print("| interpreter | mode | condition path | instructions at n1 | at n2 | per event |")
    print("|---|---|---|---|---|---|")
    for python in args.python:
        warm_up(python)
    for python in args.python:
        for mode in args.mode or ("budget", "plain"):
            for path in args.path or ("general", "fast"):
                low, high = instructions(python, mode, args.n1, path), instructions(python, mode, args.n2, path)
                print(f"| {python} | {mode} | {path} | {low:,} | {high:,} | {(high - low) / (args.n2 - args.n1):.1f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

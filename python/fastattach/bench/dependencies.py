"""What a run needs installed besides fastattach, checked before any work starts.

The harness's own dependencies are the optional extra ``fastattach[bench]``
(pyproject.toml), so that a plain ``pip install fastattach`` stays small.  Unchecked,
each missing one would surface on its own, as a traceback or as failed runs, after
whatever ran before it: the check names all of them at once, in one line, and only
those the chosen parts of the run import.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from .scenarios import DEBUGGERS
from .target import is_script

EXTRA = "fastattach[bench]"
INSTALL_COMMAND = f"pip install '{EXTRA}'"
# The status of a run that measured nothing because something is missing; argparse's
# usage errors use it too.
MISSING_STATUS = 2

# The order the line names them in.  Every one of them is also the name of its
# distribution on PyPI, so the line's names are what pip would install.
KNOWN_MODULES = ("fastattach", "debugpy", "pyperformance", "coverage", "matplotlib", "psutil")


def harness_modules(args) -> set[str]:
    """What this process imports for the parts of the run that ``args`` selects."""
    needed = {"matplotlib"}   # every run draws chart.png, and --report-only redraws it
    if args.report_only:
        return needed
    if "soak" in args.section_list:
        needed.add("psutil")   # samples each debuggee's RSS from outside
    if "ratios" in args.section_list and "debugpy" in args.mode_list:
        needed.add("psutil")   # finds debugpy's adapter process, to report its RSS
    return needed


def debuggee_modules(args) -> set[str]:
    """What the debuggee processes (target.py) import in every measured interpreter."""
    if args.report_only or not args.section_list:
        return set()
    needed = {mode for mode in args.mode_list if mode in DEBUGGERS}   # every section runs each mode
    if "fastattach" in needed:
        needed.add("debugpy")   # fastattach hosts debugpy's pydevd
    workloads = []
    if "ratios" in args.section_list:
        workloads += args.workloads
        if "coverage" in args.reference_list:
            needed.add("coverage")
    if "soak" in args.section_list:
        workloads.append(args.soak_workload)
    if any(not is_script(workload) for workload in workloads):
        needed.add("pyperformance")   # the workload files come from its package
    return needed


def _is_this_interpreter(python: str) -> bool:
    # Not realpath: a venv's python is a symlink to an interpreter that has other packages.
    return os.path.abspath(python) == os.path.abspath(sys.executable)


# Run in another interpreter: prints which of the modules named in argv it cannot find.
# find_spec of a top-level name locates the module without importing it.
_FIND_MISSING = ("import importlib.util, json, sys; "
                 "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))")


def missing_modules(python: str, modules: set[str]) -> list[str]:
    """Those of ``modules`` that ``python`` cannot import.  Raises OSError if it cannot run."""
    if not modules:
        return []
    if _is_this_interpreter(python):
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
    else:
        done = subprocess.run([python, "-c", _FIND_MISSING, *sorted(modules)], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            last_line = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise OSError(f"it exited with status {done.returncode} ({last_line})")
        missing = json.loads(done.stdout)
    return sorted(missing, key=lambda m: KNOWN_MODULES.index(m) if m in KNOWN_MODULES else len(KNOWN_MODULES))


def missing_line(args) -> str | None:
    """The one line that names the extra and everything the run needs but lacks, or None."""
    needed: dict[str, set[str]] = {sys.executable: harness_modules(args)}
    for python in args.pythons:
        key = sys.executable if _is_this_interpreter(python) else python
        needed.setdefault(key, set()).update(debuggee_modules(args))
    missing: dict[str, list[str]] = {}
    for python, modules in needed.items():
        try:
            names = missing_modules(python, modules)
        except (OSError, subprocess.SubprocessError) as error:
            return f"fastattach.bench cannot check {python}: {error}"
        if names:
            missing[python] = names
    if not missing:
        return None
    where = [f"{', '.join(names)} (not installed{'' if _is_this_interpreter(python) else f' in {python}'})"
             for python, names in missing.items()]
    elsewhere = any(not _is_this_interpreter(python) for python in missing)
    return (f"fastattach.bench needs {'; '.join(where)}: {INSTALL_COMMAND}"
            + (" into each of those Pythons" if elsewhere else ""))

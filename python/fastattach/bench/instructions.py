"""Counting the instructions a timed sample executes, with valgrind's callgrind.

A shared machine adds a few percent of noise to any time; a count of the instructions
one thread executed does not change with the load beside it.  That makes it the way to
tell 1.00x from 1.02x here.  A count sees work, not stalls, so callgrind also simulates
the caches and the branch predictor, and ``estimated_cycles`` weighs their misses the
way KCachegrind's cycle estimate does: Ir + 10 x (L1 misses + branch mispredictions) +
100 x last-level misses.

The target runs each timed sample through ``target.counted_call``, inside libffi's
``ffi_call``, which nothing else calls on the main thread while samples run and which
keeps its name in stripped interpreters (Debian's 3.14 and 3.15 have no
``_PyEval_CallTracing`` symbol).  callgrind starts with collection off, toggles it on
entering that function and off on leaving it (the collection state is per thread, so a
debugger's own threads are not counted), and writes one dump per sample, numbered in
order.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

SAMPLE_FUNCTION = "ffi_call"
_EVENTS = re.compile(r"^events:\s*(.+)$", re.MULTILINE)
_SUMMARY = re.compile(r"^(?:summary|totals):\s*([\d ]+)$", re.MULTILINE)
L1_MISSES = ("I1mr", "D1mr", "D1mw")
LAST_LEVEL_MISSES = ("ILmr", "DLmr", "DLmw")
MISPREDICTIONS = ("Bcm", "Bim")


class CallgrindUnavailable(RuntimeError):
    """valgrind is not installed, or cannot run this interpreter."""


def callgrind_prefix(out_dir: str, python: str) -> list[str]:
    """The command that goes before ``python target.py SPEC``."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise CallgrindUnavailable("valgrind is not installed (Debian: apt-get install valgrind)")
    with open(python, "rb") as interpreter:
        if interpreter.read(2) == b"#!":
            # Without --trace-children, valgrind would count the shell of a pyenv shim;
            # with it, debugpy's adapter process too.
            raise CallgrindUnavailable(f"{python} is a script (a pyenv shim?); "
                                       "give the interpreter binary or a venv's bin/python")
    os.makedirs(out_dir, exist_ok=True)
    # valgrind runs one thread at a time; with its default lock, a thread that spins in
    # Python (holding no syscall) can starve the GIL's hand-over forever, which hung the
    # sampled thread on sid's valgrind with 3.14 and 3.15. The fair lock hands over in turn.
    return [valgrind, "--tool=callgrind", "--quiet", "--fair-sched=yes", "--collect-atstart=no",
            f"--toggle-collect={SAMPLE_FUNCTION}", f"--dump-after={SAMPLE_FUNCTION}",
            "--cache-sim=yes", "--branch-sim=yes",
            f"--callgrind-out-file={os.path.join(out_dir, 'callgrind.%p')}"]


def estimated_cycles(events: dict[str, int]) -> int:
    return (events["Ir"] + 10 * sum(events.get(name, 0) for name in (*L1_MISSES, *MISPREDICTIONS))
            + 100 * sum(events.get(name, 0) for name in LAST_LEVEL_MISSES))


def sample_events(out_dir: str, pid: int) -> list[dict[str, int]]:
    """callgrind's totals (Ir, cache misses, mispredictions) for each sample of process
    ``pid``, in order (its numbered dumps)."""
    dumps = glob.glob(os.path.join(out_dir, f"callgrind.{pid}.*"))
    samples = []
    for path in sorted(dumps, key=lambda p: int(p.rsplit(".", 1)[1])):
        with open(path) as dump:
            text = dump.read()
        names, totals = _EVENTS.search(text), _SUMMARY.search(text)
        if names is None or totals is None:
            raise ValueError(f"{path}: no events or summary line (a dump cut short?)")
        samples.append(dict(zip(names.group(1).split(), map(int, totals.group(1).split()))))
    return samples


def remove_dumps(out_dir: str, pid: int) -> None:
    for path in glob.glob(os.path.join(out_dir, f"callgrind.{pid}")) + \
            glob.glob(os.path.join(out_dir, f"callgrind.{pid}.*")):
        os.remove(path)

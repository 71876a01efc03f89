"""Counting the instructions a timed sample executes, with valgrind's callgrind.

A shared machine adds a few percent of noise to any time; a count of the instructions
one thread executed does not change with the load beside it.  That makes it the way to
tell 1.00x from 1.02x here.  It counts work, not stalls: a cache miss costs one
instruction.

The target runs each timed sample inside ``sys.call_tracing(sample, ())``, whose C
function, ``_PyEval_CallTracing``, nothing else calls on the main thread.  callgrind
starts with collection off, toggles it on entering that function and off on leaving it
(the collection state is per thread, so a debugger's own threads are not counted), and
writes one dump per sample, numbered in order.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

SAMPLE_FUNCTION = "_PyEval_CallTracing"
_SUMMARY = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


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
    return [valgrind, "--tool=callgrind", "--quiet", "--collect-atstart=no",
            f"--toggle-collect={SAMPLE_FUNCTION}", f"--dump-after={SAMPLE_FUNCTION}",
            f"--callgrind-out-file={os.path.join(out_dir, 'callgrind.%p')}"]


def sample_counts(out_dir: str, pid: int) -> list[int]:
    """Instructions of each sample of process ``pid``, in order (its numbered dumps)."""
    dumps = glob.glob(os.path.join(out_dir, f"callgrind.{pid}.*"))
    counts = []
    for path in sorted(dumps, key=lambda p: int(p.rsplit(".", 1)[1])):
        with open(path) as dump:
            match = _SUMMARY.search(dump.read())
        if match is None:
            raise ValueError(f"{path}: no summary line (a dump cut short?)")
        counts.append(int(match.group(1)))
    return counts


def remove_dumps(out_dir: str, pid: int) -> None:
    for path in glob.glob(os.path.join(out_dir, f"callgrind.{pid}")) + \
            glob.glob(os.path.join(out_dir, f"callgrind.{pid}.*")):
        os.remove(path)

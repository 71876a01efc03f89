"""CPython 3.12 only: keep the superinstructions that sys.monitoring takes away.

The first time 3.12 inserts any sys.monitoring event into a code object, ``_Py_Instrument``
rewrites its superinstructions (LOAD_FAST__LOAD_FAST and four others) to their first
half, and nothing puts them back: they are made only when a code object is created.
So code that ran while a debugger was attached stays slower after every event is gone,
by 1.3% of instructions on pyperformance's richards (benchmarks/results/
issue2-instructions.md).  3.13 makes them in the compiler, and instrumentation keeps
them.

Two remedies:
- While attached, where PY_START answers DISABLE, the C filter forms them again in place
  (``_fasttrace.reform_superinstructions``), with the opcode tables built here.
- After stop(), each function whose code the filter saw gets a fresh copy of that code
  (``code.replace()`` builds and quickens a new code object), nested code objects
  included, so closures made later get them too; this also covers code that had line
  events.  Frames already running keep the old code, which stays correct.  Nothing is
  done while another tracer or monitoring tool is active: it would take them away again.
"""

from __future__ import annotations

import gc
import sys
import time
import types

from .._log import logger as log

NEEDED = sys.version_info[:2] == (3, 12)
# sys.monitoring tool ids a program can use (6 and 7 are sys.settrace and sys.setprofile).
_PUBLIC_TOOL_IDS = range(6)
SUPERINSTRUCTION_OPS = ("LOAD_FAST", "LOAD_CONST", "STORE_FAST", "LOAD_FAST__LOAD_FAST", "LOAD_FAST__LOAD_CONST",
                        "STORE_FAST__LOAD_FAST", "STORE_FAST__STORE_FAST", "LOAD_CONST__LOAD_FAST")
UNTOUCHABLE = 255


def superinstruction_table() -> tuple[bytes, bytes, bytes]:
    """(caches, bases, ops) for _fasttrace.set_superinstruction_table, from this
    interpreter's own opcode tables (what dis uses to read adaptive bytecode).

    caches[op] is op's inline cache entries, or UNTOUCHABLE for any instrumented opcode
    but INSTRUMENTED_RESUME and for unknown ones; bases[op] is its unspecialized form."""
    import dis
    import opcode

    caches = bytearray([UNTOUCHABLE]) * 256
    bases = bytearray(256)
    for name, op in dis._all_opmap.items():
        if op > 255:   # pseudo-instructions never reach bytecode
            continue
        if op >= opcode.MIN_INSTRUMENTED_OPCODE:
            if name != "INSTRUMENTED_RESUME":
                continue
            base = opcode.opmap["RESUME"]
        else:
            base = dis._deoptop(op)
        caches[op] = opcode._inline_cache_entries[base]
        bases[op] = base
    ops = bytes(dis._all_opmap[name] for name in SUPERINSTRUCTION_OPS)
    return bytes(caches), bytes(bases), ops


def other_instrumentation_active() -> bool:
    monitoring = sys.monitoring
    return (sys.gettrace() is not None or sys.getprofile() is not None
            or any(monitoring.get_tool(tool) is not None for tool in _PUBLIC_TOOL_IDS))


def _fresh(code: types.CodeType, seen_by_filter, renewed: dict) -> types.CodeType:
    """A new copy of code, its nested code objects renewed first; code that no event
    reached, and that nests none that one did, is returned as it is.

    ``renewed`` maps id(code) to (code, its copy): by identity, because code objects
    compare equal by content, and holding the original keeps its id from being reused."""
    known = renewed.get(id(code))
    if known is not None:
        return known[1]
    consts = code.co_consts
    nested = tuple(_fresh(const, seen_by_filter, renewed) if isinstance(const, types.CodeType) else const
                   for const in consts)
    if seen_by_filter(code) or any(new is not old for new, old in zip(nested, consts)):
        copy = code.replace(co_consts=nested)
    else:
        copy = code
    renewed[id(code)] = (code, copy)
    return copy


def requicken(seen_by_filter) -> int:
    """Re-creates the code of every function whose code ``seen_by_filter`` says was
    instrumented; returns how many functions got new code.  Never raises."""
    if not NEEDED:
        return 0
    try:
        if other_instrumentation_active():
            log.info("fastattach: another tracer or monitoring tool is active; "
                     "instrumented code keeps its 3.12 deoptimized form")
            return 0
        started = time.perf_counter()
        renewed: dict = {}
        count = 0
        for candidate in gc.get_objects():
            if type(candidate) is not types.FunctionType:
                continue
            code = candidate.__code__
            try:
                fresh = _fresh(code, seen_by_filter, renewed)
                if fresh is not code:
                    candidate.__code__ = fresh
                    count += 1
            except Exception as error:   # a function whose code cannot be copied keeps it
                log.debug("fastattach: kept the code of %r: %r", candidate, error)
        log.info("fastattach: %d functions got freshly quickened code after stop() (%.1f ms)",
                 count, (time.perf_counter() - started) * 1e3)
        return count
    except Exception:
        log.exception("fastattach: giving instrumented code its superinstructions back failed")
        return 0

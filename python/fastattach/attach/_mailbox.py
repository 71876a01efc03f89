"""The mailbox: queue ``PyRun_SimpleString(code)`` as a main-thread pending call from outside.

3.12 and 3.13 have no PEP 768 buffer, but they do have the queue ``Py_AddPendingCall`` fills
(``_PyRuntime.ceval.pending_mainthread``). We write an entry into it with process_vm_writev
and raise the eval-breaker flag; the main thread runs it at its next eval-breaker check. The
target is never stopped and no code is injected. The code string itself lives in free slots
of the same ring buffer, so nothing has to be allocated in the target.

Limits, and how they are handled:
- It runs only when the main thread executes bytecode; a main thread blocked in C never
  runs it. The orchestrator then retracts the entry and uses the ptrace injector.
- The queue is protected by a lock we cannot take from outside. We write only when the
  queue is idle (no consumer busy, lock free), and the target's own producers are rare
  (C extensions calling Py_AddPendingCall; signals use a separate flag).
- The eval-breaker update on 3.13 is a read-modify-write of a word the target changes
  atomically; a bit it sets in the microseconds between our read and write can be lost.
  CPython's own sys.remote_exec does the same and accepts that race.
"""

from __future__ import annotations

import dataclasses
import struct

from . import _offsets
from ._errors import AttachError
from ._runtime import PythonRuntime, i32, read_memory, u64, write_memory


@dataclasses.dataclass
class MailboxEntry:
    """Where our pending call was written, so it can be checked and retracted."""

    slot_address: int
    code_address: int
    function: int
    index: int            # our slot in the ring
    first_address: int    # the ring's consumer index
    end_address: int      # the ring's producer index (3.12 "last", 3.13 "next")
    ncalls: int


def has_layout(runtime: PythonRuntime) -> bool:
    return runtime.version_hex in _offsets.PENDING_CALL_LAYOUTS and bool(runtime.run_simple_string)


def choose_code_slots(first: int, last: int, ncalls: int, need: int) -> int | None:
    """First slot of ``need`` contiguous free slots, as far ahead of the producer as possible.

    ``first``..``last`` (ring order, ``last`` included because our entry goes there) are in use.
    """
    used = {(first + k) % ncalls for k in range((last - first) % ncalls + 1)}
    for step in range(ncalls):
        start = (last + ncalls // 2 + step) % ncalls
        if start + need <= ncalls and not any(slot in used for slot in range(start, start + need)):
            return start
    return None


def post(runtime: PythonRuntime, code: str) -> MailboxEntry:
    """Queue ``code`` for the main thread. Raises AttachError('unsupported') when this exact
    version has no layout, and AttachError('injection_failed') when the queue is not idle."""
    layout = _offsets.PENDING_CALL_LAYOUTS.get(runtime.version_hex)
    if layout is None or not runtime.run_simple_string:
        raise AttachError("unsupported", f"no pending-call layout for Python {runtime.version_text}")
    pid = runtime.pid
    queue = runtime.runtime_address + layout["runtime_pending_main"]
    ncalls, call_size = layout["pending_ncalls"], layout["pending_call_size"]
    calls = queue + layout["pending_calls"]
    encoded = code.encode() + b"\0"
    need = -(-len(encoded) // call_size)

    if runtime.version[:2] == (3, 12):
        first = i32(pid, queue + layout["pending_first"])
        last = i32(pid, queue + layout["pending_last"])
        if i32(pid, queue + layout["pending_busy"]) or (last + 1) % ncalls == first:
            raise AttachError("injection_failed", "the target's pending-call queue is busy")
        start = _code_slots(first, last, ncalls, need)
        code_address = calls + start * call_size
        slot = calls + last * call_size
        write_memory(pid, code_address, encoded)
        write_memory(pid, slot, struct.pack("<QQ", runtime.run_simple_string, code_address))
        write_memory(pid, queue + layout["pending_last"], struct.pack("<i", (last + 1) % ncalls))
        write_memory(pid, queue + layout["pending_calls_to_do"], struct.pack("<i", 1))
        interp = u64(pid, runtime.runtime_address + layout["runtime_interpreters_main"])
        if not interp:
            raise AttachError("injection_failed", "the target has no main interpreter (shutting down?)")
        write_memory(pid, interp + layout["interp_eval_breaker"], struct.pack("<i", 1))
    else:
        first = i32(pid, queue + layout["pending_first"])
        nxt = i32(pid, queue + layout["pending_next"])
        npending = i32(pid, queue + layout["pending_npending"])
        locked = read_memory(pid, queue + layout["pending_mutex"], 1)[0]
        handling = u64(pid, queue + layout["pending_handling_thread"])
        if locked or handling or npending >= i32(pid, queue + layout["pending_max"]):
            raise AttachError("injection_failed", "the target's pending-call queue is busy")
        main_tstate = u64(pid, runtime.runtime_address + layout["runtime_main_tstate"])
        if not main_tstate:
            raise AttachError("injection_failed", "the target has no main thread state (shutting down?)")
        start = _code_slots(first, nxt, ncalls, need)
        code_address = calls + start * call_size
        slot = calls + nxt * call_size
        write_memory(pid, code_address, encoded)
        write_memory(pid, slot, struct.pack("<QQi", runtime.run_simple_string, code_address,
                                            layout["mainthreadonly_flag"]))
        write_memory(pid, queue + layout["pending_npending"], struct.pack("<i", npending + 1))
        write_memory(pid, queue + layout["pending_next"], struct.pack("<i", (nxt + 1) % ncalls))
        breaker = main_tstate + layout["tstate_eval_breaker"]
        write_memory(pid, breaker, struct.pack("<Q", u64(pid, breaker) | layout["calls_to_do_bit"]))
    end_name = "pending_last" if runtime.version[:2] == (3, 12) else "pending_next"
    return MailboxEntry(slot, code_address, runtime.run_simple_string, (slot - calls) // call_size,
                        queue + layout["pending_first"], queue + layout[end_name], ncalls)


def _code_slots(first: int, last: int, ncalls: int, need: int) -> int:
    start = choose_code_slots(first, last, ncalls, need)
    if start is None:
        raise AttachError("injection_failed", "the target's pending-call queue has no room for the bootstrap code")
    return start


def retract(runtime: PythonRuntime, entry: MailboxEntry) -> bool:
    """Turn our queued call into a no-op if it has not run yet; True if it was still queued.

    The entry stays in the queue (removing it would race with the consumer); its code
    becomes ``pass``, so a late run does nothing.
    """
    pid = runtime.pid
    first, end = i32(pid, entry.first_address), i32(pid, entry.end_address)
    queued = (entry.index - first) % entry.ncalls < (end - first) % entry.ncalls
    func, arg = struct.unpack("<QQ", read_memory(pid, entry.slot_address, 16))
    if not queued or func != entry.function or arg != entry.code_address:
        return False
    write_memory(runtime.pid, entry.code_address, b"pass\0")
    return True

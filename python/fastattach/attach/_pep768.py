"""PEP 768 (CPython 3.14+): what ``sys.remote_exec`` does, from an orchestrator of any version.

Steps (CPython ``Python/remote_debugging.c`` ``send_exec_to_proc_handle``):
read ``_Py_DebugOffsets`` at the start of ``_PyRuntime``; check the cookie and version; find
the main interpreter and require its ``remote_debugging_enabled`` flag; pick the thread state
(the main thread, or the one whose ``native_thread_id`` matches); write the script path and a
NUL into its ``debugger_script_path``; set ``debugger_pending_call`` to 1; OR the
PLEASE_STOP bit into its ``eval_breaker``. The target runs the script at its next eval
breaker check, on that thread.

No 3.14 exists on this machine. The layout is transcribed from
``Include/internal/pycore_debug_offsets.h`` and is never trusted blindly: the
``debugger_support`` block is recognised by its signature (pending_call 0, script_path 4,
size 512) and the ``thread_state`` block by (prev 0, next 8, interp 16); tests build memory
images to check parsing and the exact writes planned.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable

from ._errors import AttachError
from ._runtime import DEBUG_OFFSETS_COOKIE, format_version, read_memory, write_memory

PLEASE_STOP_BIT = 1 << 5
DEBUG_OFFSETS_READ_SIZE = 4096

# Number of uint64 fields in each sub-struct of _Py_DebugOffsets, in order, for 3.14.
LAYOUT_314 = (
    ("header", 3),              # cookie[8], version, free_threaded
    ("runtime_state", 3),       # size, finalizing, interpreters_head
    ("interpreter_state", 16),  # size, id, next, threads_head, threads_main, ...
    ("thread_state", 9),        # size, prev, next, interp, current_frame, thread_id, native_thread_id, ...
    ("interpreter_frame", 8),
    ("code_object", 11),
    ("pyobject", 2), ("type_object", 4), ("tuple_object", 3), ("list_object", 3), ("set_object", 4),
    ("dict_object", 3), ("float_object", 2), ("long_object", 3), ("bytes_object", 3), ("unicode_object", 4),
    ("gc", 2), ("gen_object", 4), ("llist_node", 2),
    ("debugger_support", 6),    # eval_breaker, remote_debugger_support, remote_debugging_enabled,
                                # debugger_pending_call, debugger_script_path, debugger_script_path_size
)


def block_offset(name: str) -> int:
    offset = 0
    for block, count in LAYOUT_314:
        if block == name:
            return offset
        offset += 8 * count
    raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class DebugOffsets:
    version: int
    free_threaded: bool
    finalizing: int
    interpreters_head: int
    threads_head: int
    threads_main: int
    tstate_size: int
    tstate_next: int
    tstate_native_thread_id: int
    eval_breaker: int
    remote_debugger_support: int
    remote_debugging_enabled: int
    debugger_pending_call: int
    debugger_script_path: int
    debugger_script_path_size: int


def _debugger_support_at(raw: bytes, offset: int) -> bool:
    if offset < 24 or offset + 48 > len(raw):
        return False
    eb, rds, enabled, pending, path, size = struct.unpack_from("<6Q", raw, offset)
    return (pending == 0 and path == 4 and size == 512 and 0 < eb < 0x10000 and 0 < rds < 0x10000
            and 0 < enabled < 0x100000)


def _thread_state_at(raw: bytes, offset: int) -> bool:
    if offset + 56 > len(raw):
        return False
    size, prev, nxt, interp = struct.unpack_from("<4Q", raw, offset)
    return prev == 0 and nxt == 8 and interp == 16 and 64 <= size <= 0x10000


def _find(raw: bytes, expected: int, check: Callable[[bytes, int], bool], what: str) -> int:
    if check(raw, expected):
        return expected
    for offset in range(24, min(len(raw), DEBUG_OFFSETS_READ_SIZE) - 8, 8):
        if check(raw, offset):
            return offset
    raise AttachError("unsupported",
                      f"unsupported CPython build: _Py_DebugOffsets layout not recognised ({what} not found)")


def parse_debug_offsets(raw: bytes) -> DebugOffsets:
    """Parse the start of a 3.14+ ``_PyRuntime``; AttachError('unsupported') on anything else."""
    if raw[:8] != DEBUG_OFFSETS_COOKIE:
        raise AttachError("unsupported", "the target has no _Py_DebugOffsets (Python 3.12 or older): no PEP 768")
    version, free_threaded = struct.unpack_from("<QQ", raw, 8)
    if (version >> 24, (version >> 16) & 0xFF) < (3, 14):
        raise AttachError("unsupported", f"the target is Python {format_version(version)}: "
                                         f"the PEP 768 protocol needs 3.14 or later")
    support = _find(raw, block_offset("debugger_support"), _debugger_support_at, "debugger_support")
    tstate = _find(raw, block_offset("thread_state"), _thread_state_at, "thread_state")
    runtime_state = block_offset("runtime_state")
    interp = block_offset("interpreter_state")
    _rs_size, finalizing, interpreters_head = struct.unpack_from("<3Q", raw, runtime_state)
    threads_head, threads_main = struct.unpack_from("<2Q", raw, interp + 24)
    ts_size, _prev, ts_next = struct.unpack_from("<3Q", raw, tstate)
    native_tid = struct.unpack_from("<Q", raw, tstate + 48)[0]
    eb, rds, enabled, pending, path, path_size = struct.unpack_from("<6Q", raw, support)
    if rds + path + path_size > ts_size:
        raise AttachError("unsupported", "unsupported CPython build: _Py_DebugOffsets are inconsistent "
                                         "(the script buffer lies outside PyThreadState)")
    return DebugOffsets(version, bool(free_threaded), finalizing, interpreters_head, threads_head, threads_main,
                        ts_size, ts_next, native_tid, eb, rds, enabled, pending, path, path_size)


@dataclasses.dataclass(frozen=True)
class WritePlan:
    """The three writes sys.remote_exec makes, in order, with their target addresses."""

    thread_state: int
    script_path_address: int
    script_path_bytes: bytes
    pending_call_address: int
    eval_breaker_address: int
    eval_breaker_value: int   # what we will write: the value read | PLEASE_STOP_BIT

    def writes(self) -> list[tuple[int, bytes]]:
        return [(self.script_path_address, self.script_path_bytes),
                (self.pending_call_address, struct.pack("<i", 1)),
                (self.eval_breaker_address, struct.pack("<Q", self.eval_breaker_value))]


def plan(read: Callable[[int, int], bytes], runtime_address: int, script_path: str, pid: int,
         tid: int = 0) -> WritePlan:
    """Work out the writes for ``script_path`` from ``read(address, size)`` of the target's memory."""
    offsets = parse_debug_offsets(read(runtime_address, DEBUG_OFFSETS_READ_SIZE))

    def u64(address: int) -> int:
        return struct.unpack("<Q", read(address, 8))[0]

    if offsets.finalizing and u64(runtime_address + offsets.finalizing):
        raise AttachError("unsupported", f"PID {pid} is shutting down its interpreter; retry later")
    interp = u64(runtime_address + offsets.interpreters_head)
    if not interp:
        raise AttachError("unsupported", f"PID {pid} has no interpreter yet (starting up); retry later")
    enabled = struct.unpack("<i", read(interp + offsets.remote_debugging_enabled, 4))[0]
    if enabled != 1:
        raise AttachError("remote_debug_disabled",
                          f"remote debugging is disabled in PID {pid} (PYTHON_DISABLE_REMOTE_DEBUG=1, "
                          f"-X disable_remote_debug, or a --without-remote-debug build); restart it without "
                          f"that setting to attach")
    if tid:
        tstate, seen = u64(interp + offsets.threads_head), 0
        while tstate and u64(tstate + offsets.tstate_native_thread_id) != tid:
            tstate, seen = u64(tstate + offsets.tstate_next), seen + 1
            if seen > 100000:
                raise AttachError("unsupported", f"PID {pid}: thread list does not end (memory changed under us?)")
        if not tstate:
            raise AttachError("no_such_process", f"thread {tid} of PID {pid} has no Python thread state")
    else:
        tstate = u64(interp + offsets.threads_main)
        if not tstate:
            raise AttachError("unsupported", f"PID {pid} has no main thread state (shutting down?)")
    encoded = os.fsencode(script_path)
    if len(encoded) >= offsets.debugger_script_path_size:
        raise AttachError("unsupported", f"bootstrap path too long for PEP 768: {len(encoded)} bytes, "
                                         f"the limit is {offsets.debugger_script_path_size - 1}")
    support = tstate + offsets.remote_debugger_support
    breaker = tstate + offsets.eval_breaker
    return WritePlan(tstate, support + offsets.debugger_script_path, encoded + b"\0",
                     support + offsets.debugger_pending_call, breaker, u64(breaker) | PLEASE_STOP_BIT)


def send(pid: int, runtime_address: int, script_path: str, tid: int = 0) -> WritePlan:
    """Carry out the plan against a live target."""
    write_plan = plan(lambda address, size: read_memory(pid, address, size), runtime_address, script_path, pid, tid)
    (path_address, path_bytes), (pending_address, pending_bytes), _ = write_plan.writes()
    write_memory(pid, path_address, path_bytes)
    write_memory(pid, pending_address, pending_bytes)
    # Re-read right before the write: the target changes this word atomically all the time,
    # so keep our read-modify-write window as short as CPython's own.
    current = struct.unpack("<Q", read_memory(pid, write_plan.eval_breaker_address, 8))[0]
    write_memory(pid, write_plan.eval_breaker_address, struct.pack("<Q", current | PLEASE_STOP_BIT))
    return write_plan


def retract(pid: int, write_plan: WritePlan) -> None:
    """Withdraw a request the target has not taken yet (we are falling back to ptrace, and the
    script file goes away): clear ``debugger_pending_call``. If the target took it meanwhile,
    the flag is already 0 and this changes nothing."""
    write_memory(pid, write_plan.pending_call_address, struct.pack("<i", 0))

"""PEP 768 (CPython 3.14+): what ``sys.remote_exec`` does, from an orchestrator of any version.

Steps (CPython ``Python/remote_debugging.c`` ``send_exec_to_proc_handle``):
read ``_Py_DebugOffsets`` at the start of ``_PyRuntime``; check the cookie and version; find
the main interpreter and require its ``remote_debugging_enabled`` flag; pick the thread state
(the main thread, or the one whose ``native_thread_id`` matches); write the script path and a
NUL into its ``debugger_script_path``; set ``debugger_pending_call`` to 1; OR the
PLEASE_STOP bit into its ``eval_breaker``. The target runs the script at its next eval
breaker check, on that thread.

The layout is transcribed, per minor version, from each version's
``Include/internal/pycore_debug_offsets.h`` and is never trusted blindly: the
``debugger_support`` block is recognised by its signature (pending_call 0, script_path 4,
size 512), the ``thread_state`` block by (prev 0, next 8, interp 16), and thread ids read
through it are checked against the process's tasks. Tests check the table against
``offsetof()`` from the running 3.14/3.15's own header, attach to real 3.14 and 3.15
targets, and build memory images for the exact writes planned.
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

# The fields of _Py_DebugOffsets, block by block, as each version's
# Include/internal/pycore_debug_offsets.h declares them (every field is a uint64_t). Named,
# not counted: 3.15 inserted fields in the middle of thread_state (native_thread_id moved
# from word 6 to word 9) and whole blocks before debugger_support. tests/test_attach_layouts.py
# checks the running interpreter's table against offsetof() from its own header.
LAYOUT_314 = (
    ("header", ("cookie", "version", "free_threaded")),
    ("runtime_state", ("size", "finalizing", "interpreters_head")),
    ("interpreter_state", ("size", "id", "next", "threads_head", "threads_main", "gc", "imports_modules", "sysdict",
                           "builtins", "ceval_gil", "gil_runtime_state", "gil_runtime_state_enabled",
                           "gil_runtime_state_locked", "gil_runtime_state_holder", "code_object_generation",
                           "tlbc_generation")),
    ("thread_state", ("size", "prev", "next", "interp", "current_frame", "thread_id", "native_thread_id",
                      "datastack_chunk", "status")),
    ("interpreter_frame", ("size", "previous", "executable", "instr_ptr", "localsplus", "owner", "stackpointer",
                           "tlbc_index")),
    ("code_object", ("size", "filename", "name", "qualname", "linetable", "firstlineno", "argcount",
                     "localsplusnames", "localspluskinds", "co_code_adaptive", "co_tlbc")),
    ("pyobject", ("size", "ob_type")),
    ("type_object", ("size", "tp_name", "tp_repr", "tp_flags")),
    ("tuple_object", ("size", "ob_item", "ob_size")),
    ("list_object", ("size", "ob_item", "ob_size")),
    ("set_object", ("size", "used", "table", "mask")),
    ("dict_object", ("size", "ma_keys", "ma_values")),
    ("float_object", ("size", "ob_fval")),
    ("long_object", ("size", "lv_tag", "ob_digit")),
    ("bytes_object", ("size", "ob_size", "ob_sval")),
    ("unicode_object", ("size", "state", "length", "asciiobject_size")),
    ("gc", ("size", "collecting")),
    ("gen_object", ("size", "gi_name", "gi_iframe", "gi_frame_state")),
    ("llist_node", ("next", "prev")),
    ("debugger_support", ("eval_breaker", "remote_debugger_support", "remote_debugging_enabled",
                          "debugger_pending_call", "debugger_script_path", "debugger_script_path_size")),
)


_BLOCKS_314 = dict(LAYOUT_314)
LAYOUT_315 = (
    ("header", _BLOCKS_314["header"]),
    ("runtime_state", _BLOCKS_314["runtime_state"]),
    ("interpreter_state", _BLOCKS_314["interpreter_state"]),
    ("thread_state", ("size", "prev", "next", "interp", "current_frame", "base_frame", "last_profiled_frame",
                      "last_profiled_frame_seq", "thread_id", "native_thread_id", "datastack_chunk", "status",
                      "holds_gil", "gil_requested", "current_exception", "exc_state")),
    ("err_stackitem", ("exc_value",)),
    ("interpreter_frame", _BLOCKS_314["interpreter_frame"]),
    ("code_object", _BLOCKS_314["code_object"]),
    ("pyobject", _BLOCKS_314["pyobject"]),
    ("type_object", ("size", "tp_name", "tp_repr", "tp_flags", "tp_basicsize", "tp_dictoffset")),
    ("heap_type_object", ("size", "ht_cached_keys")),
    ("tuple_object", _BLOCKS_314["tuple_object"]),
    ("list_object", _BLOCKS_314["list_object"]),
    ("set_object", _BLOCKS_314["set_object"]),
    ("dict_object", _BLOCKS_314["dict_object"]),
    ("float_object", _BLOCKS_314["float_object"]),
    ("long_object", _BLOCKS_314["long_object"]),
    ("bytes_object", _BLOCKS_314["bytes_object"]),
    ("unicode_object", ("size", "state", "length", "asciiobject_size", "compactunicodeobject_size")),
    ("gc", ("size", "collecting", "frame", "generation_stats_size", "generation_stats")),
    ("gen_object", _BLOCKS_314["gen_object"]),
    ("llist_node", _BLOCKS_314["llist_node"]),
    ("debugger_support", _BLOCKS_314["debugger_support"]),
)

LAYOUTS = {(3, 14): LAYOUT_314, (3, 15): LAYOUT_315}


def layout_for(version: tuple[int, int]):
    """The layout of that minor version; for a newer one, the newest we know. That is only a
    guess, which is why the blocks we read are recognised by their signature and the thread
    ids read through it are checked against the process's own tasks (see ``plan``)."""
    return LAYOUTS.get(version) or LAYOUTS[max(LAYOUTS)]


def block_offset(name: str, layout=LAYOUT_314) -> int:
    offset = 0
    for block, fields in layout:
        if block == name:
            return offset
        offset += 8 * len(fields)
    raise KeyError(name)


def field_index(block: str, field: str, layout=LAYOUT_314) -> int:
    """Where ``field`` sits inside its block, in bytes."""
    return 8 * dict(layout)[block].index(field)


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
    minor_version = (version >> 24, (version >> 16) & 0xFF)
    if minor_version < (3, 14):
        raise AttachError("unsupported", f"the target is Python {format_version(version)}: "
                                         f"the PEP 768 protocol needs 3.14 or later")
    layout = layout_for(minor_version)

    def field(block_start: int, block: str, name: str) -> int:
        return struct.unpack_from("<Q", raw, block_start + field_index(block, name, layout))[0]

    support = _find(raw, block_offset("debugger_support", layout), _debugger_support_at, "debugger_support")
    tstate = _find(raw, block_offset("thread_state", layout), _thread_state_at, "thread_state")
    runtime_state = block_offset("runtime_state", layout)
    interp = block_offset("interpreter_state", layout)
    ts_size = field(tstate, "thread_state", "size")
    rds = field(support, "debugger_support", "remote_debugger_support")
    path = field(support, "debugger_support", "debugger_script_path")
    path_size = field(support, "debugger_support", "debugger_script_path_size")
    native_tid = field(tstate, "thread_state", "native_thread_id")
    if rds + path + path_size > ts_size:
        raise AttachError("unsupported", "unsupported CPython build: _Py_DebugOffsets are inconsistent "
                                         "(the script buffer lies outside PyThreadState)")
    if not 0 < native_tid + 8 <= ts_size:
        raise AttachError("unsupported", f"unsupported CPython build: _Py_DebugOffsets are inconsistent "
                                         f"(native_thread_id at {native_tid} lies outside PyThreadState)")
    return DebugOffsets(version, bool(free_threaded), field(runtime_state, "runtime_state", "finalizing"),
                        field(runtime_state, "runtime_state", "interpreters_head"),
                        field(interp, "interpreter_state", "threads_head"),
                        field(interp, "interpreter_state", "threads_main"),
                        ts_size, field(tstate, "thread_state", "next"), native_tid,
                        field(support, "debugger_support", "eval_breaker"), rds,
                        field(support, "debugger_support", "remote_debugging_enabled"),
                        field(support, "debugger_support", "debugger_pending_call"), path, path_size)


def _tasks_from_proc(pid: int) -> set[int]:
    try:
        return {int(name) for name in os.listdir(f"/proc/{pid}/task")}
    except OSError:
        return set()


def _thread_state_of(u64, interp: int, offsets: DebugOffsets, pid: int, tid: int, tasks) -> int:
    """The thread state whose native_thread_id is ``tid``. A layout we got wrong reads some
    other word as the id (3.15 moved it, and reading 3.14's word there gives a frame
    pointer), so when ``tid`` is not found we check the ids we did read against the
    process's real tasks, and say which failed: our layout, or the caller's thread id."""
    tstate, native_ids = u64(interp + offsets.threads_head), []
    while tstate:
        native_id = u64(tstate + offsets.tstate_native_thread_id)
        if native_id == tid:
            return tstate
        native_ids.append(native_id)
        if len(native_ids) > 100000:
            raise AttachError("unsupported", f"PID {pid}: thread list does not end (memory changed under us?)")
        tstate = u64(tstate + offsets.tstate_next)
    real = (tasks or (lambda: _tasks_from_proc(pid)))()
    if native_ids and real and not real & set(native_ids):
        raise AttachError("unsupported", f"cannot choose a thread in PID {pid} (Python "
                                         f"{format_version(offsets.version)}): the thread ids read through its "
                                         f"_Py_DebugOffsets ({', '.join(map(str, native_ids[:5]))}) are none of its "
                                         f"threads, so this layout is not understood; attach without choosing a thread")
    python_threads = ", ".join(str(n) for n in sorted(set(native_ids) & real)) if real else ""
    raise AttachError("no_such_process", f"thread {tid} of PID {pid} has no Python thread state"
                                         + (f" (its Python threads: {python_threads})" if python_threads else ""))


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
         tid: int = 0, tasks: Callable[[], set[int]] | None = None) -> WritePlan:
    """Work out the writes for ``script_path`` from ``read(address, size)`` of the target's memory.

    ``tid``: run it on the thread with that native id (0: the main thread). ``tasks()``: the
    process's thread ids, to check the ids read from its thread states (default: /proc)."""
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
                          f"remote debugging is disabled in PID {pid} (it was started with "
                          f"-X disable-remote-debug or with PYTHON_DISABLE_REMOTE_DEBUG set, or Python was "
                          f"built --without-remote-debug); restart it without that setting to attach")
    if tid:
        tstate = _thread_state_of(u64, interp, offsets, pid, tid, tasks)
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


def taken(pid: int, write_plan: WritePlan) -> bool:
    """Whether the target has taken the request: it clears ``debugger_pending_call`` just
    before it opens the script. (Taking it says nothing about the script running: a target
    that cannot read the file only prints the error on its own stderr.)"""
    return struct.unpack("<i", read_memory(pid, write_plan.pending_call_address, 4))[0] == 0

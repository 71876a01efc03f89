"""The project's only cffi code: libc calls that CPython's stdlib does not expose.

ABI mode (no compiler at run time): every declaration below must match glibc exactly on
x86-64 Linux, because a misdeclared function crashes instead of failing to build.
"""

from __future__ import annotations

import os
import struct

from cffi import FFI

ffi = FFI()
ffi.cdef("""
    typedef int pid_t;
    struct iovec { void *iov_base; size_t iov_len; };
    ssize_t process_vm_readv(pid_t pid, const struct iovec *local_iov, unsigned long liovcnt,
                             const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
    ssize_t process_vm_writev(pid_t pid, const struct iovec *local_iov, unsigned long liovcnt,
                              const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
    long ptrace(int request, ...);
""")
# Keep the library object alive for the life of the module (cffi: "keep the library object around").
libc = ffi.dlopen(None)

PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
NT_X86_XSTATE = 0x202

# struct user_regs_struct on x86-64 (sys/user.h): 27 unsigned longs in this order.
USER_REGS_FIELDS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
    "ds", "es", "fs", "gs",
)
_USER_REGS = struct.Struct("<27Q")
USER_REGS_SIZE = _USER_REGS.size
# Large enough for any x86 XSAVE area (AVX-512 + AMX tiles are about 11 KiB); the kernel
# shrinks iov_len to the real size on GETREGSET.
XSTATE_BUFFER_SIZE = 16384


class LibcError(OSError):
    """An errno from a libc call, with the call named in the message."""


def _raise_errno(what: str) -> None:
    err = ffi.errno  # read at once: the next C call may overwrite it
    raise LibcError(err, f"{what}: {os.strerror(err)}")


def read_memory(pid: int, address: int, size: int) -> bytes:
    """``size`` bytes at ``address`` in process ``pid`` (never stops the process)."""
    buf = ffi.new("char[]", size)  # referenced until the call returns: the iovec points into it
    local = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": size})
    remote = ffi.new("struct iovec *", {"iov_base": ffi.cast("void *", address), "iov_len": size})
    n = libc.process_vm_readv(pid, local, 1, remote, 1, 0)
    if n < 0:
        _raise_errno(f"process_vm_readv(pid {pid}, {address:#x}, {size} bytes)")
    if n != size:
        raise LibcError(5, f"process_vm_readv(pid {pid}, {address:#x}): short read, {n} of {size} bytes")
    return ffi.buffer(buf, size)[:]


def write_memory(pid: int, address: int, data: bytes) -> None:
    """Write ``data`` at ``address`` in process ``pid``. Respects page protections (no code writes)."""
    buf = ffi.from_buffer(data)
    local = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": len(data)})
    remote = ffi.new("struct iovec *", {"iov_base": ffi.cast("void *", address), "iov_len": len(data)})
    n = libc.process_vm_writev(pid, local, 1, remote, 1, 0)
    if n < 0:
        _raise_errno(f"process_vm_writev(pid {pid}, {address:#x}, {len(data)} bytes)")
    if n != len(data):
        raise LibcError(5, f"process_vm_writev(pid {pid}, {address:#x}): short write, {n} of {len(data)} bytes")


def _ptrace(request: int, tid: int, addr, data) -> int:
    # ptrace is variadic in glibc, so every argument after the first must be cdata.
    ffi.errno = 0
    result = libc.ptrace(request, ffi.cast("pid_t", tid), addr, data)
    if result == -1 and ffi.errno:
        names = {PTRACE_SEIZE: "PTRACE_SEIZE", PTRACE_INTERRUPT: "PTRACE_INTERRUPT", PTRACE_CONT: "PTRACE_CONT",
                 PTRACE_DETACH: "PTRACE_DETACH", PTRACE_GETREGS: "PTRACE_GETREGS", PTRACE_SETREGS: "PTRACE_SETREGS",
                 PTRACE_GETREGSET: "PTRACE_GETREGSET", PTRACE_SETREGSET: "PTRACE_SETREGSET"}
        _raise_errno(f"ptrace({names.get(request, request)}, tid {tid})")
    return result


def ptrace_seize(tid: int) -> None:
    # No options: in particular not PTRACE_O_EXITKILL, so a dying tracer never kills the target.
    _ptrace(PTRACE_SEIZE, tid, ffi.NULL, ffi.cast("void *", 0))


def ptrace_interrupt(tid: int) -> None:
    _ptrace(PTRACE_INTERRUPT, tid, ffi.NULL, ffi.NULL)


def ptrace_cont(tid: int, signal: int = 0) -> None:
    _ptrace(PTRACE_CONT, tid, ffi.NULL, ffi.cast("void *", signal))


def ptrace_detach(tid: int, signal: int = 0) -> None:
    _ptrace(PTRACE_DETACH, tid, ffi.NULL, ffi.cast("void *", signal))


def ptrace_get_regs(tid: int) -> dict[str, int]:
    buf = ffi.new("char[]", USER_REGS_SIZE)
    _ptrace(PTRACE_GETREGS, tid, ffi.NULL, ffi.cast("void *", buf))
    return dict(zip(USER_REGS_FIELDS, _USER_REGS.unpack(ffi.buffer(buf, USER_REGS_SIZE)[:])))


def ptrace_set_regs(tid: int, regs: dict[str, int]) -> None:
    packed = _USER_REGS.pack(*(regs[name] & 0xFFFFFFFFFFFFFFFF for name in USER_REGS_FIELDS))
    buf = ffi.from_buffer(packed)
    _ptrace(PTRACE_SETREGS, tid, ffi.NULL, ffi.cast("void *", buf))


def ptrace_get_xstate(tid: int) -> bytes:
    """The thread's whole XSAVE area: x87, SSE, AVX, AVX-512 and every other extended state."""
    buf = ffi.new("char[]", XSTATE_BUFFER_SIZE)
    iov = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": XSTATE_BUFFER_SIZE})
    _ptrace(PTRACE_GETREGSET, tid, ffi.cast("void *", NT_X86_XSTATE), ffi.cast("void *", iov))
    return ffi.buffer(buf, iov.iov_len)[:]


def ptrace_set_xstate(tid: int, xstate: bytes) -> None:
    buf = ffi.from_buffer(xstate)
    iov = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": len(xstate)})
    _ptrace(PTRACE_SETREGSET, tid, ffi.cast("void *", NT_X86_XSTATE), ffi.cast("void *", iov))


__all__ = [
    "LibcError", "read_memory", "write_memory", "ptrace_seize", "ptrace_interrupt", "ptrace_cont",
    "ptrace_detach", "ptrace_get_regs", "ptrace_set_regs", "ptrace_get_xstate", "ptrace_set_xstate",
    "PTRACE_EVENT_STOP", "USER_REGS_FIELDS",
]

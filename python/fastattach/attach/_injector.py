"""Our own ptrace injector: make one thread of the target dlopen() the agent, then put it back.

For a target whose main thread is blocked in native code (sleep, accept, select, a lock),
where a pending call would never run. What the borrowed thread executes is C only: mmap,
dlopen, fastattach_agent_start (which starts a pthread), munmap. Python code runs later on
that new thread, which takes the GIL like any other (see src/attach_agent.c).

Safety rules, each one a crash or hang seen with other injectors (docs/attach.md):
- Save and restore the general registers and the whole XSAVE area (NT_X86_XSTATE): an
  injector that keeps only the general registers corrupted SIMD state and crashed targets.
- Borrow the thread only at a safe point: blocked in a syscall from SAFE_SYSCALLS, or with
  its instruction pointer in CPython's own code. Never inside libc, where it might hold a
  malloc or loader lock that dlopen would then wait for forever.
- Set orig_rax to -1 while we run our calls, so the kernel does not "restart" the
  interrupted syscall over our instruction pointer; restoring the saved orig_rax and rax
  afterwards lets the original syscall restart as if nothing happened.
- Our calls return to address 0. The SIGSEGV that follows stops the thread for us (we
  are its tracer) and is discarded, never delivered. No signal is ever sent to the target.
- PTRACE_SEIZE without PTRACE_O_EXITKILL: if the orchestrator dies, the target lives.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import struct
import time
from collections.abc import Callable

from .. import _libc
from . import _elf
from ._errors import AttachError, permission_error, process_state, status_field

WAIT_ALL_THREADS = 0x40000000  # __WALL: the tracee is a thread, not our child
RETURN_ADDRESS = 0
PRIVATE_STACK_SIZE = 512 * 1024
MMAP_PROT_READ_WRITE = 0x1 | 0x2
MMAP_FLAGS = 0x02 | 0x20 | 0x20000  # MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK
RTLD_NOW = 0x2
CALL_ALLOWANCE = 10.0  # seconds any one call in the target may take past the attach deadline
LIBC_SYMBOLS = frozenset({"dlopen", "dlsym", "dlerror", "mmap", "munmap"})

# x86-64 syscall numbers of calls where a thread waits without holding any libc lock.
# (A futex wait may be for a lock another thread holds; our dlopen then waits for it too,
# like any thread would, but the borrowed thread itself holds nothing we need.)
SAFE_SYSCALLS = {
    0: "read", 1: "write", 2: "open", 7: "poll", 17: "pread64", 19: "readv", 20: "writev",
    23: "select", 34: "pause", 35: "nanosleep", 40: "sendfile", 42: "connect", 43: "accept",
    44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 61: "wait4", 65: "semop",
    72: "fcntl", 73: "flock", 128: "rt_sigtimedwait", 130: "rt_sigsuspend", 202: "futex",
    208: "io_getevents", 220: "semtimedop", 230: "clock_nanosleep", 232: "epoll_wait",
    243: "mq_timedreceive", 247: "waitid", 257: "openat", 270: "pselect6", 271: "ppoll",
    281: "epoll_pwait", 288: "accept4", 299: "recvmmsg", 441: "epoll_pwait2",
}

AGENT_RESULTS = {
    1: "the target has no CPython C API symbols (not a CPython process)",
    2: "the target's interpreter is not initialized (starting up or shutting down)",
    3: "out of memory in the target",
    4: "pthread_create failed in the target",
}


def _signed(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


@dataclasses.dataclass
class LibcFunctions:
    dlopen: int
    dlsym: int
    dlerror: int
    mmap: int
    munmap: int


def find_libc_functions(pid: int) -> LibcFunctions:
    try:
        mappings = _elf.read_maps(pid)
    except FileNotFoundError:
        mappings = []
    if not mappings or process_state(pid).startswith(("Z", "X", "gone")):
        raise AttachError("no_such_process", f"PID {pid} exited during the attach")

    def is_libc(basename: str) -> bool:
        return basename.startswith("libc.so") or (basename.startswith("libc-") and basename.endswith(".so"))

    found = _elf.find_module(pid, mappings, is_libc, LIBC_SYMBOLS)
    if found is None or not LIBC_SYMBOLS <= found[1].symbols.keys():
        raise AttachError("unsupported", f"PID {pid}: cannot find glibc's dlopen/mmap in the target "
                                         f"(a musl or static build?); the ptrace injector needs glibc 2.34 or later")
    _path, image, base = found
    return LibcFunctions(**{name: base + image.symbols[name][0] for name in LIBC_SYMBOLS})


def code_ranges(pid: int, module_path: str) -> list[tuple[int, int]]:
    """Executable mappings of the CPython module: a thread stopped there holds no libc lock."""
    return [(m.start, m.end) for m in _elf.read_maps(pid) if m.path == module_path and "x" in m.perms]


def thread_syscall(pid: int, tid: int) -> str:
    """What /proc says the thread is doing: 'running' or the blocking syscall's name."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            first = f.read().split()[0]
    except (OSError, IndexError):
        return "unknown"
    if first in ("running", "-1"):
        return "running"
    number = int(first)
    return SAFE_SYSCALLS.get(number, f"syscall {number}")


class _Tracee:
    """One seized thread, with a deadline on every wait."""

    def __init__(self, pid: int, tid: int, deadline: float):
        self.pid, self.tid, self.deadline = pid, tid, deadline
        self.stopped = False
        # Set once wait reports the thread gone: there is nothing left to restore or detach.
        self.gone = False

    def wait_stop(self, step: str, deadline: float | None = None) -> int:
        """Wait for the next ptrace stop; return the raw wait status."""
        deadline = self.deadline if deadline is None else deadline
        delay = 0.0002
        while True:
            try:
                waited, status = os.waitpid(self.tid, os.WNOHANG | WAIT_ALL_THREADS)
            except ChildProcessError:
                self.gone = True
                raise AttachError("no_such_process", f"PID {self.pid} exited during the attach ({step})") from None
            if waited:
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    self.gone = True
                if os.WIFEXITED(status):
                    raise AttachError("no_such_process", f"PID {self.pid} exited during the attach ({step}): "
                                                         f"exit status {os.WEXITSTATUS(status)}")
                if os.WIFSIGNALED(status):
                    raise AttachError("injection_failed", f"PID {self.pid} was killed by signal "
                                                          f"{signal.Signals(os.WTERMSIG(status)).name} during the "
                                                          f"attach ({step})")
                self.stopped = True
                return status
            if time.monotonic() > deadline:
                raise AttachError("timeout", f"the attach timed out while {step}; the target is "
                                             f"{process_state(self.pid)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    def resume(self, sig: int = 0) -> None:
        self.stopped = False
        _libc.ptrace_cont(self.tid, sig)

    def interrupt_and_stop(self, step: str) -> None:
        """Bring the thread to a ptrace stop, passing through any signal that comes first.

        A running or sleeping thread stops within microseconds; it gets at least a second
        even when the attach's own deadline is about to pass, so a late last attempt is
        judged on what it finds, not cut off."""
        deadline = max(self.deadline, time.monotonic() + 1.0)
        _libc.ptrace_interrupt(self.tid)
        while True:
            status = self.wait_stop(step, deadline)
            if status >> 16 == _libc.PTRACE_EVENT_STOP:
                return
            # A signal-delivery stop that raced with our interrupt: deliver it as the kernel would have.
            self.resume(os.WSTOPSIG(status))


def inject(pid: int, agent_path: str, *, code_for_thread: Callable[[int], str], python_module: str, timeout: float,
           tid: int | None = None) -> dict:
    """Make thread ``tid`` (default: the main thread) start the agent, which runs Python code
    on a new thread. ``code_for_thread(ident)`` makes that code; ``ident`` is the borrowed
    thread's ``threading.get_ident()`` (its TCB address, the fs base on x86-64 glibc).
    Returns facts for the report: the thread and where it was stopped."""
    tid = tid or pid
    deadline = time.monotonic() + timeout
    libc_functions = find_libc_functions(pid)
    safe_code = code_ranges(pid, python_module)
    tracee = _Tracee(pid, tid, deadline)
    try:
        _libc.ptrace_seize(tid)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            if _exiting(pid):
                raise AttachError("no_such_process", f"PID {pid} exited during the attach") from None
            tracer = _tracer_pid(pid)
            if tracer:
                raise AttachError("permission", f"PID {pid} is already traced by PID {tracer} (a debugger such as "
                                                f"gdb or strace?); detach it first") from None
            raise permission_error(pid, f"PTRACE_SEIZE failed ({exc.strerror})") from None
        if exc.errno == errno.ESRCH:
            raise AttachError("no_such_process", f"no such process: PID {pid} (it exited)") from None
        raise AttachError("injection_failed", f"cannot trace PID {pid}: {exc}") from None

    saved_regs = saved_xstate = None
    report: dict = {"tid": tid}
    try:
        saved_regs, report["stopped_in"] = _stop_at_safe_point(tracee, safe_code)
        saved_xstate = _libc.ptrace_get_xstate(tid)
        python_code = code_for_thread(saved_regs["fs_base"])
        report["agent_result"] = _run_agent(tracee, saved_regs, libc_functions, agent_path, python_code)
        if report["agent_result"]:
            reason = AGENT_RESULTS.get(report["agent_result"], report["agent_result"])
            raise AttachError("injection_failed", f"the agent could not start in PID {pid}: {reason}")
        return report
    finally:
        _release(tracee, saved_regs, saved_xstate)


def _exiting(pid: int, within: float = 0.2) -> bool:
    """ptrace refuses a process that has begun to exit with the same EPERM as a permission
    problem: tell them apart by watching it finish dying."""
    deadline = time.monotonic() + within
    while True:
        if process_state(pid).startswith(("Z", "X", "gone")):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _tracer_pid(pid: int) -> int:
    return int(status_field(pid, "TracerPid") or 0)


def _stop_at_safe_point(tracee: _Tracee, safe_code: list[tuple[int, int]]) -> tuple[dict, str]:
    last = "no stop yet"
    while True:
        tracee.interrupt_and_stop("stopping the main thread")
        regs = _libc.ptrace_get_regs(tracee.tid)
        syscall = _signed(regs["orig_rax"])
        if syscall >= 0 and syscall in SAFE_SYSCALLS:
            return regs, f"syscall {SAFE_SYSCALLS[syscall]}"
        if syscall < 0 and any(lo <= regs["rip"] < hi for lo, hi in safe_code):
            return regs, "CPython code"
        last = f"syscall {syscall}" if syscall >= 0 else f"user code at {regs['rip']:#x}"
        tracee.resume()
        if time.monotonic() + 0.002 > tracee.deadline:
            raise AttachError("no_safe_point", f"the main thread of PID {tracee.pid} never reached a safe point "
                                               f"in time (last seen in {last}); the target was left running")
        time.sleep(0.002)


def _remote_call(tracee: _Tracee, base_regs: dict, function: int, args: tuple[int, ...], stack_top: int,
                 what: str) -> int:
    """Run ``function(*args)`` on the stopped thread with its stack at ``stack_top``; return rax."""
    regs = dict(base_regs)
    for name, value in zip(("rdi", "rsi", "rdx", "rcx", "r8", "r9"), args):
        regs[name] = value
    # At a function's first instruction the ABI wants rsp % 16 == 8 (the return address was just pushed).
    sp = (stack_top & ~0xF) - 8
    _libc.write_memory(tracee.pid, sp, struct.pack("<Q", RETURN_ADDRESS))
    regs.update(rip=function, rsp=sp, rax=0, orig_rax=(1 << 64) - 1)
    _libc.ptrace_set_regs(tracee.tid, regs)
    # Once a call runs, cutting it short is worse than waiting: abandoning dlopen half way
    # would leave the loader's lock held in the target forever. These calls take
    # milliseconds; the extra allowance is for a loaded machine.
    deadline = max(tracee.deadline, time.monotonic() + CALL_ALLOWANCE)
    tracee.resume()
    while True:
        status = tracee.wait_stop(f"running {what} in the target (if it was cut short, the target "
                                  f"may be unable to load libraries from now on)", deadline)
        sig = os.WSTOPSIG(status)
        if status >> 16 == _libc.PTRACE_EVENT_STOP:
            tracee.resume()  # a group stop (SIGSTOP to the target): finish our call first
            continue
        if sig == signal.SIGSEGV:
            after = _libc.ptrace_get_regs(tracee.tid)
            if after["rip"] == RETURN_ADDRESS:
                return after["rax"]
            raise AttachError("injection_failed", f"{what} faulted in PID {tracee.pid} at {after['rip']:#x}; "
                                                  f"the thread's registers were restored and the fault discarded")
        tracee.resume(sig)  # the target's own signal: deliver it, its handler runs as usual


def _run_agent(tracee: _Tracee, regs: dict, libc_functions: LibcFunctions, agent_path: str, code: str) -> int:
    # Below the red zone (128 bytes) of whatever the thread was doing; mmap and munmap need
    # only a few bytes, and this stays inside the stack mapping the thread already uses.
    current_stack = regs["rsp"] - 512
    region = _remote_call(tracee, regs, libc_functions.mmap,
                          (0, PRIVATE_STACK_SIZE, MMAP_PROT_READ_WRITE, MMAP_FLAGS, (1 << 64) - 1, 0),
                          current_stack, "mmap")
    if _signed(region) < 0:
        raise AttachError("injection_failed", f"mmap failed in PID {tracee.pid}: {os.strerror(-_signed(region))}")
    try:
        path_bytes = os.fsencode(agent_path) + b"\0"
        code_bytes = code.encode() + b"\0"
        symbol_bytes = b"fastattach_agent_start\0"
        path_address = region
        symbol_address = path_address + len(path_bytes)
        code_address = symbol_address + len(symbol_bytes)
        _libc.write_memory(tracee.pid, region, path_bytes + symbol_bytes + code_bytes)
        stack_top = region + PRIVATE_STACK_SIZE

        handle = _remote_call(tracee, regs, libc_functions.dlopen, (path_address, RTLD_NOW), stack_top, "dlopen")
        if not handle:
            message = _remote_dlerror(tracee, regs, libc_functions, stack_top)
            raise AttachError("injection_failed", f"dlopen of the agent failed in PID {tracee.pid}: {message}")
        start = _remote_call(tracee, regs, libc_functions.dlsym, (handle, symbol_address), stack_top, "dlsym")
        if not start:
            raise AttachError("injection_failed", f"the agent {agent_path} has no fastattach_agent_start")
        return _remote_call(tracee, regs, start, (code_address,), stack_top, "fastattach_agent_start") & 0xFFFFFFFF
    finally:
        _remote_call(tracee, regs, libc_functions.munmap, (region, PRIVATE_STACK_SIZE), current_stack, "munmap")


def _remote_dlerror(tracee: _Tracee, regs: dict, libc_functions: LibcFunctions, stack_top: int) -> str:
    text_address = _remote_call(tracee, regs, libc_functions.dlerror, (), stack_top, "dlerror")
    if not text_address:
        return "unknown error"
    raw = _libc.read_memory(tracee.pid, text_address, 512)
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _release(tracee: _Tracee, saved_regs: dict | None, saved_xstate: bytes | None) -> None:
    """Put the thread back exactly as it was and let it go, whatever happened before."""
    if tracee.gone:
        return
    problems = []
    try:
        if not tracee.stopped:
            # Give the restore a short deadline of its own, even if the attach's has passed.
            tracee.deadline = time.monotonic() + 2.0
            tracee.interrupt_and_stop("stopping the thread to restore it")
        if saved_xstate is not None:
            _libc.ptrace_set_xstate(tracee.tid, saved_xstate)
        if saved_regs is not None:
            _libc.ptrace_set_regs(tracee.tid, saved_regs)
    except AttachError as exc:
        if tracee.gone:
            return
        problems.append(str(exc))
    except OSError as exc:
        if exc.errno == errno.ESRCH and process_state(tracee.pid).startswith(("Z", "X", "gone")):
            return
        problems.append(str(exc))
    try:
        _libc.ptrace_detach(tracee.tid, 0)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            problems.append(str(exc))
    if problems:
        # Last resort: a detached thread left in a group stop would stay stopped.
        try:
            os.kill(tracee.pid, signal.SIGCONT)
        except OSError:
            pass
        raise AttachError("injection_failed", f"could not cleanly restore PID {tracee.pid} "
                                              f"({'; '.join(problems)}); it was sent SIGCONT and is now "
                                              f"{process_state(tracee.pid)}")

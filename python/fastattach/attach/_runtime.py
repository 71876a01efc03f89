"""Locate a target's CPython runtime from outside: which module, which version, where _PyRuntime is."""

from __future__ import annotations

import dataclasses
import errno
import os
import struct

from .. import _libc
from . import _elf
from ._errors import AttachError, permission_error

PYTHON_SYMBOLS = frozenset({"_PyRuntime", "Py_Version", "PyRun_SimpleString"})
DEBUG_OFFSETS_COOKIE = b"xdebugpy"


@dataclasses.dataclass
class PythonRuntime:
    pid: int
    module_path: str          # libpython*.so or the python executable, as the target sees it
    runtime_address: int      # &_PyRuntime in the target
    version_hex: int          # PY_VERSION_HEX of the target
    run_simple_string: int    # &PyRun_SimpleString in the target (0 if not exported)
    has_debug_offsets: bool   # 3.13+: _PyRuntime starts with _Py_DebugOffsets

    @property
    def version(self) -> tuple[int, int, int]:
        v = self.version_hex
        return v >> 24, (v >> 16) & 0xFF, (v >> 8) & 0xFF

    @property
    def version_text(self) -> str:
        return format_version(self.version_hex)


def format_version(v: int) -> str:
    level = {0xA: "a", 0xB: "b", 0xC: "rc"}.get((v >> 4) & 0xF)
    suffix = f"{level}{v & 0xF}" if level else ""
    return f"{v >> 24}.{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}{suffix}"


def check_process(pid: int) -> None:
    """Raise a clear AttachError unless ``pid`` is a live process whose memory we may read."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise AttachError("no_such_process", f"invalid PID {pid!r}: expected a positive integer")
    if pid == os.getpid():
        raise AttachError("unsupported", f"PID {pid} is this process: use fastattach.listen() to debug yourself")
    if not os.path.exists(f"/proc/{pid}"):
        raise AttachError("no_such_process", f"no such process: PID {pid}")
    try:
        with open(f"/proc/{pid}/maps") as f:
            f.read(1)
    except PermissionError as exc:
        raise permission_error(pid, f"cannot read /proc/{pid}/maps ({exc.strerror})") from None
    except FileNotFoundError:
        raise AttachError("no_such_process", f"no such process: PID {pid} (it exited)") from None


def read_memory(pid: int, address: int, size: int) -> bytes:
    """process_vm_readv, with permission and exit errors turned into AttachError."""
    try:
        return _libc.read_memory(pid, address, size)
    except OSError as exc:
        raise _memory_error(pid, exc) from None


def write_memory(pid: int, address: int, data: bytes) -> None:
    try:
        _libc.write_memory(pid, address, data)
    except OSError as exc:
        raise _memory_error(pid, exc) from None


def _memory_error(pid: int, exc: OSError) -> AttachError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return permission_error(pid, str(exc))
    if exc.errno == errno.ESRCH:
        return AttachError("no_such_process", f"no such process: PID {pid} (it exited)")
    return AttachError("injection_failed", f"cannot access the memory of PID {pid}: {exc}")


def u64(pid: int, address: int) -> int:
    return struct.unpack("<Q", read_memory(pid, address, 8))[0]


def i32(pid: int, address: int) -> int:
    return struct.unpack("<i", read_memory(pid, address, 4))[0]


def locate(pid: int) -> PythonRuntime:
    """Find the module that defines _PyRuntime in ``pid`` and read the interpreter version."""
    try:
        mappings = _elf.read_maps(pid)
    except PermissionError as exc:
        raise permission_error(pid, f"cannot read /proc/{pid}/maps ({exc.strerror})") from None
    except FileNotFoundError:
        raise AttachError("no_such_process", f"no such process: PID {pid} (it exited)") from None

    try:
        # A statically linked interpreter need not be called python* (an embedding app, uwsgi...).
        executable = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        executable = None

    def looks_like_python(basename: str) -> bool:
        return "libpython" in basename or basename.startswith("python") or basename == executable

    found = _elf.find_module(pid, mappings, looks_like_python, PYTHON_SYMBOLS)
    if found is None:
        raise AttachError("not_python", f"PID {pid} is not a CPython process "
                                        f"(no libpython or python executable with _PyRuntime is mapped)")
    path, image, base = found
    runtime = image.symbols.get("_PyRuntime") or image.sections.get(".PyRuntime")
    if runtime is None:
        raise AttachError("not_python", f"PID {pid} is not a CPython process ({path} has no _PyRuntime)")
    runtime_address = base + runtime[0]
    head = read_memory(pid, runtime_address, 24)
    has_debug_offsets = head[:8] == DEBUG_OFFSETS_COOKIE
    if "Py_Version" in image.symbols:
        version_hex = struct.unpack("<I", read_memory(pid, base + image.symbols["Py_Version"][0], 4))[0]
    elif has_debug_offsets:
        version_hex = struct.unpack_from("<Q", head, 8)[0]
    else:
        # Py_Version exists since 3.11; without it and without debug offsets this is too old.
        raise AttachError("unsupported",
                          f"PID {pid} runs a CPython older than 3.11 ({path}); attach needs 3.12 or later")
    simple = image.symbols.get("PyRun_SimpleString")
    return PythonRuntime(pid, path, runtime_address, version_hex, base + simple[0] if simple else 0, has_debug_offsets)


def check_supported(runtime: PythonRuntime) -> None:
    if runtime.version[:2] < (3, 12):
        raise AttachError("unsupported",
                          f"PID {runtime.pid} runs Python {runtime.version_text}, which is not supported: "
                                         f"attach needs CPython 3.12 or later")

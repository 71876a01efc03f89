"""The parts of attach that read layouts: offset tables, ELF symbols, the mailbox ring, the
PEP 768 debug offsets (against this Python's own headers and on memory images of every layout
we know), the bootstrap code."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import sysconfig

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastattach._address import parse_address
from fastattach._handoff import STARTUP_SWITCH_INTERVAL
from fastattach.attach import AttachError, _elf, _mailbox, _offsets, _orchestrator, _pep768, _runtime
from fastattach.attach._orchestrator import bootstrap_code

# -- offset tables ------------------------------------------------------------------

def test_delivery_layout_matches_this_pythons_headers(tmp_path):
    # The table the safe-point delivery of this Python uses must equal what its own headers
    # say: the pending-call offsets on 3.12/3.13, _Py_DebugOffsets (PEP 768) on 3.14+.
    if sys.version_info >= (3, 14):
        _check_debug_offsets_against_headers(tmp_path)
    else:
        _check_pending_call_table_against_headers(tmp_path)


def _compile_and_run(tmp_path, source_text: str, *extra_flags: str) -> dict[str, int]:
    source = tmp_path / "offsets.c"
    source.write_text(source_text)
    binary = tmp_path / "offsets"
    include = sysconfig.get_paths()["include"]
    built = subprocess.run(["cc", f"-I{include}", *extra_flags, "-o", str(binary), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    values = dict(line.split() for line in subprocess.check_output([str(binary)], text=True).splitlines())
    return {name: int(value) for name, value in values.items()}


def _check_pending_call_table_against_headers(tmp_path):
    values = _compile_and_run(tmp_path, _offsets.GENERATOR_SOURCES[sys.version_info[:2]])
    assert values.pop("version_hex") == sys.hexversion
    assert _offsets.PENDING_CALL_LAYOUTS[sys.hexversion] == values


def _check_debug_offsets_against_headers(tmp_path):
    # The interpreter's own _Py_DebugOffsets_INIT, compiled against its own
    # internal/pycore_debug_offsets.h, gives where each field sits in the struct and what
    # value it holds; our per-version table and our parse of the live _PyRuntime must agree.
    layout = _pep768.LAYOUTS[sys.version_info[:2]]
    lines = []
    for block, fields in layout:
        for field in fields:
            member = field if block == "header" else f"{block}.{field}"  # the header's fields are not nested
            lines.append(f'    printf("at.{block}.{field} %zu\\n", offsetof(_Py_DebugOffsets, {member}));')
            if block != "header":
                lines.append(f'    printf("value.{block}.{field} %llu\\n", '
                             f'(unsigned long long)offsets.{block}.{field});')
    source = ("#include <Python.h>\n#include <stddef.h>\n#include <stdio.h>\n"
              '#include "internal/pycore_runtime.h"\n#include "internal/pycore_interp.h"\n'
              '#include "internal/pycore_debug_offsets.h"\n'
              "static const _Py_DebugOffsets offsets = _Py_DebugOffsets_INIT(\"xdebugpy\");\n"
              "int main(void) {\n" + "\n".join(lines) +
              '\n    printf("sizeof %zu\\n", sizeof(_Py_DebugOffsets));\n    return 0;\n}\n')
    values = _compile_and_run(tmp_path, source, "-DPy_BUILD_CORE")
    # Where every field sits: our table, block by block
    for block, fields in layout:
        for field in fields:
            assert values[f"at.{block}.{field}"] == (_pep768.block_offset(block, layout)
                                                     + _pep768.field_index(block, field, layout)), (block, field)
    assert values["sizeof"] == sum(8 * len(fields) for _, fields in layout)
    # What we read from this very process's _PyRuntime is what the header put there
    runtime = _runtime.locate(os.getpid())
    parsed = _pep768.parse_debug_offsets(_runtime.read_memory(os.getpid(), runtime.runtime_address, 4096))
    expected = {
        "version": sys.hexversion,
        "finalizing": values["value.runtime_state.finalizing"],
        "interpreters_head": values["value.runtime_state.interpreters_head"],
        "threads_head": values["value.interpreter_state.threads_head"],
        "threads_main": values["value.interpreter_state.threads_main"],
        "tstate_size": values["value.thread_state.size"],
        "tstate_next": values["value.thread_state.next"],
        "tstate_native_thread_id": values["value.thread_state.native_thread_id"],
        "eval_breaker": values["value.debugger_support.eval_breaker"],
        "remote_debugger_support": values["value.debugger_support.remote_debugger_support"],
        "remote_debugging_enabled": values["value.debugger_support.remote_debugging_enabled"],
        "debugger_pending_call": values["value.debugger_support.debugger_pending_call"],
        "debugger_script_path": values["value.debugger_support.debugger_script_path"],
        "debugger_script_path_size": values["value.debugger_support.debugger_script_path_size"],
    }
    assert {name: getattr(parsed, name) for name in expected} == expected


# -- ELF and runtime location -----------------------------------------------------------

def test_locate_finds_our_own_runtime():
    runtime = _runtime.locate(os.getpid())
    assert runtime.version_hex == sys.hexversion
    assert runtime.runtime_address == ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
    assert runtime.run_simple_string == ctypes.cast(ctypes.pythonapi.PyRun_SimpleString, ctypes.c_void_p).value
    assert runtime.has_debug_offsets == (sys.version_info >= (3, 13))


def test_libc_symbols_resolve_to_the_default_versions():
    from fastattach.attach._injector import find_libc_functions
    libc = ctypes.CDLL(None)
    functions = find_libc_functions(os.getpid())
    for name in ("dlopen", "dlsym", "mmap", "munmap"):
        assert getattr(functions, name) == ctypes.cast(getattr(libc, name), ctypes.c_void_p).value, name


def test_non_elf_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "libpython-fake.so"
    bogus.write_bytes(b"not an elf at all")
    with pytest.raises(_elf.ElfError, match="not an ELF file"):
        _elf.read_elf(str(bogus), frozenset({"_PyRuntime"}))
    truncated = tmp_path / "truncated.so"
    truncated.write_bytes(b"\x7fELF\x02\x01" + b"\0" * 20)
    with pytest.raises(_elf.ElfError, match="truncated or malformed"):
        _elf.read_elf(str(truncated), frozenset({"_PyRuntime"}))


@pytest.mark.parametrize("version, text", [(0x030C01F0, "3.12.1"), (0x030E00B2, "3.14.0b2"), (0x030D00C1, "3.13.0rc1")])
def test_format_version(version, text):
    assert _runtime.format_version(version) == text


# -- mailbox ring ------------------------------------------------------------------------

@given(ncalls=st.sampled_from([32, 300]), first=st.integers(0, 299), used=st.integers(0, 20), need=st.integers(1, 12))
def test_code_slots_never_overlap_queued_entries(ncalls, first, used, need):
    first %= ncalls
    last = (first + used) % ncalls
    start = _mailbox.choose_code_slots(first, last, ncalls, need)
    occupied = {(first + k) % ncalls for k in range(used + 1)}
    if start is not None:
        assert 0 <= start and start + need <= ncalls
        assert not occupied & set(range(start, start + need))


def test_code_slots_full_ring_has_no_room():
    assert _mailbox.choose_code_slots(0, 31, 32, 1) is None


# -- bootstrap code ----------------------------------------------------------------------

def test_bootstrap_swallows_everything_and_binds_nothing(tmp_path):
    code = bootstrap_code(str(tmp_path / "missing_loader.py"), str(tmp_path / "settings.json"), 1234)
    namespace = {"__builtins__": __builtins__}
    exec(compile(code, "<bootstrap>", "exec"), namespace)  # a missing loader raises inside: swallowed
    assert set(namespace) == {"__builtins__"}


def test_bootstrap_passes_settings_and_main_ident(tmp_path):
    loader = tmp_path / "loader.py"
    loader.write_text("import json\nwith open(OUT, 'w') as f:\n    f.write(json.dumps([_fa_settings, "
                      "_fa_main_ident, __name__]))\n".replace("OUT", repr(str(tmp_path / "out"))))
    exec(bootstrap_code(str(loader), "/some/settings.json", 42), {})
    assert (tmp_path / "out").read_text() == '["/some/settings.json", 42, "<run_path>"]'


@pytest.mark.parametrize("address, expected", [(5678, ("127.0.0.1", 5678)), ("0.0.0.0:0", ("0.0.0.0", 0)),
                                               (":7", ("127.0.0.1", 7)), (("::1", "9"), ("::1", 9))])
def test_parse_address(address, expected):
    assert parse_address(address) == expected


# -- PEP 768 on memory images --------------------------------------------------------------
# The same images for every _Py_DebugOffsets layout we know, whichever Python runs the tests:
# the orchestrator may be any version, the target is the one that matters.

RUNTIME = 0x10000
INTERP = 0x20000
MAIN_TSTATE = 0x30000
OTHER_TSTATE = 0x38000
ENABLED_OFFSET = 0x1200
EVAL_BREAKER, REMOTE_SUPPORT = 0x18, 0x800
TSTATE_SIZE = 0xC00
NATIVE_TID_OFFSET = 0xA0
NATIVE_TID_MAIN, NATIVE_TID_OTHER = 4242, 4243
TASKS = {NATIVE_TID_MAIN, NATIVE_TID_OTHER}
VERSIONS = {(3, 14): 0x030E0AF0, (3, 15): 0x030F02F0}
LAYOUT_VERSIONS = pytest.mark.parametrize("version", sorted(VERSIONS.values()), ids=["3.14", "3.15"])


class Image:
    """A sparse memory image with the read() the PEP 768 planner expects."""

    def __init__(self):
        self.memory: dict[int, int] = {}

    def put(self, address: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            self.memory[address + i] = byte

    def read(self, address: int, size: int) -> bytes:
        return bytes(self.memory.get(address + i, 0) for i in range(size))


def debug_offsets(version=VERSIONS[(3, 14)], extra_interp_fields=0, layout_version=None) -> bytes:
    """A _Py_DebugOffsets in the layout of ``layout_version`` (default: ``version``'s);
    ``extra_interp_fields`` shifts everything after interpreter_state, as a later version
    adding fields would."""
    layout = _pep768.layout_for(layout_version or (version >> 24, (version >> 16) & 0xFF))
    values = {
        "header": {"cookie": int.from_bytes(b"xdebugpy", "little"), "version": version},
        "runtime_state": {"size": 0x5000, "finalizing": 0x3F0, "interpreters_head": 0x400},
        "interpreter_state": {"size": 0x4000, "next": 8, "threads_head": 0x40, "threads_main": 0x48},
        "thread_state": {"size": TSTATE_SIZE, "next": 8, "interp": 16, "current_frame": 0x30, "thread_id": 0x90,
                         "native_thread_id": NATIVE_TID_OFFSET},
        "debugger_support": {"eval_breaker": EVAL_BREAKER, "remote_debugger_support": REMOTE_SUPPORT,
                             "remote_debugging_enabled": ENABLED_OFFSET, "debugger_script_path": 4,
                             "debugger_script_path_size": 512},
    }
    blocks = []
    for name, fields in layout:
        words = [values.get(name, {}).get(field, 0) for field in fields]
        if name == "interpreter_state":
            words += [0] * extra_interp_fields
        blocks.append(struct.pack(f"<{len(words)}Q", *words))
    return b"".join(blocks)


def target_image(enabled=1, **kwargs) -> Image:
    image = Image()
    image.put(RUNTIME, debug_offsets(**kwargs))
    image.put(RUNTIME + 0x400, struct.pack("<Q", INTERP))                # interpreters_head
    image.put(INTERP + 0x40, struct.pack("<Q", MAIN_TSTATE))             # threads_head
    image.put(INTERP + 0x48, struct.pack("<Q", MAIN_TSTATE))             # threads_main
    image.put(INTERP + ENABLED_OFFSET, struct.pack("<i", enabled))
    image.put(MAIN_TSTATE + 8, struct.pack("<Q", OTHER_TSTATE))          # next
    for tstate, native_tid in ((MAIN_TSTATE, NATIVE_TID_MAIN), (OTHER_TSTATE, NATIVE_TID_OTHER)):
        image.put(tstate + NATIVE_TID_OFFSET, struct.pack("<Q", native_tid))
        image.put(tstate + 0x30, struct.pack("<Q", 0x7F0000001000))     # a frame pointer, as current_frame
    # Instrumentation version in the high bits plus GIL_DROP: both must survive our OR.
    image.put(MAIN_TSTATE + EVAL_BREAKER, struct.pack("<Q", (7 << 8) | 1))
    image.put(OTHER_TSTATE + EVAL_BREAKER, struct.pack("<Q", 0))
    return image


@LAYOUT_VERSIONS
def test_pep768_plan_writes_what_sys_remote_exec_writes(version):
    image = target_image(version=version)
    plan = _pep768.plan(image.read, RUNTIME, "/tmp/fa/bootstrap.py", pid=99)
    assert plan.writes() == [
        (MAIN_TSTATE + REMOTE_SUPPORT + 4, b"/tmp/fa/bootstrap.py\0"),
        (MAIN_TSTATE + REMOTE_SUPPORT + 0, struct.pack("<i", 1)),
        (MAIN_TSTATE + EVAL_BREAKER, struct.pack("<Q", (7 << 8) | 1 | (1 << 5))),
    ]


@LAYOUT_VERSIONS
def test_pep768_plan_for_a_chosen_thread(version):
    plan = _pep768.plan(target_image(version=version).read, RUNTIME, "/b.py", pid=99, tid=NATIVE_TID_OTHER,
                        tasks=lambda: TASKS)
    assert plan.thread_state == OTHER_TSTATE
    assert plan.eval_breaker_value == 1 << 5
    with pytest.raises(AttachError, match=r"thread 1 of PID 99 has no Python thread state \(its Python threads: "
                                          r"4242, 4243\)"):
        _pep768.plan(target_image(version=version).read, RUNTIME, "/b.py", pid=99, tid=1, tasks=lambda: TASKS)


def test_pep768_a_wrong_layout_is_caught_by_the_thread_ids_it_reads():
    # GIVEN a 3.15 target read with 3.14's layout (what the parser did before 3.15 was named:
    # native_thread_id read from 3.14's word 6, which on 3.15 is last_profiled_frame)
    raw = bytearray(debug_offsets(version=VERSIONS[(3, 15)], layout_version=(3, 14)))
    image = target_image(version=VERSIONS[(3, 15)])
    image.put(RUNTIME, bytes(raw))
    for tstate in (MAIN_TSTATE, OTHER_TSTATE):
        image.put(tstate + NATIVE_TID_OFFSET, struct.pack("<Q", 0))
    # WHEN a thread is chosen, THEN it says the layout is not understood, not that the thread has no state
    with pytest.raises(AttachError) as caught:
        _pep768.plan(image.read, RUNTIME, "/b.py", pid=99, tid=NATIVE_TID_OTHER, tasks=lambda: TASKS)
    assert caught.value.reason == "unsupported"
    assert "cannot choose a thread in PID 99 (Python 3.15.2)" in str(caught.value)
    assert "attach without choosing a thread" in str(caught.value)


@LAYOUT_VERSIONS
def test_pep768_honours_remote_debug_disabled(version):
    with pytest.raises(AttachError) as caught:
        _pep768.plan(target_image(enabled=0, version=version).read, RUNTIME, "/b.py", pid=99)
    assert caught.value.reason == "remote_debug_disabled"
    # The spelling CPython accepts: "-X disable_remote_debug" is silently ignored by it
    assert str(caught.value).startswith("remote debugging is disabled in PID 99 (it was started with "
                                        "-X disable-remote-debug or with PYTHON_DISABLE_REMOTE_DEBUG set")


@LAYOUT_VERSIONS
def test_pep768_layout_found_by_signature_when_fields_are_added(version):
    offsets = _pep768.parse_debug_offsets(debug_offsets(version=version, extra_interp_fields=3))
    assert (offsets.eval_breaker, offsets.remote_debugger_support, offsets.remote_debugging_enabled) == (
        EVAL_BREAKER, REMOTE_SUPPORT, ENABLED_OFFSET)
    assert (offsets.tstate_size, offsets.tstate_native_thread_id) == (TSTATE_SIZE, NATIVE_TID_OFFSET)


def test_pep768_a_newer_version_uses_the_newest_layout_we_know():
    offsets = _pep768.parse_debug_offsets(debug_offsets(version=0x031000F0, layout_version=(3, 15)))
    assert offsets.tstate_native_thread_id == NATIVE_TID_OFFSET


@LAYOUT_VERSIONS
def test_pep768_refuses_older_versions_and_unknown_layouts(version):
    with pytest.raises(AttachError, match="the target is Python 3.13.0: the PEP 768 protocol needs 3.14 or later"):
        _pep768.parse_debug_offsets(debug_offsets(version=0x030D00F0, layout_version=(3, 14)))
    with pytest.raises(AttachError, match="no _Py_DebugOffsets"):
        _pep768.parse_debug_offsets(b"\x01\0\0\0" * 64)
    broken = bytearray(debug_offsets(version=version))
    layout = _pep768.layout_for((version >> 24, (version >> 16) & 0xFF))
    size_at = (_pep768.block_offset("debugger_support", layout)
               + _pep768.field_index("debugger_support", "debugger_script_path_size", layout))
    broken[size_at:size_at + 8] = struct.pack("<Q", 256)  # script path size is not 512
    with pytest.raises(AttachError, match="layout not recognised"):
        _pep768.parse_debug_offsets(bytes(broken))


def test_pep768_path_too_long():
    with pytest.raises(AttachError, match="bootstrap path too long for PEP 768: 600 bytes, the limit is 511"):
        _pep768.plan(target_image().read, RUNTIME, "/" + "x" * 599, pid=99)


def test_pep768_on_this_interpreter_plans_or_refuses_clearly():
    runtime = _runtime.locate(os.getpid())
    raw = _runtime.read_memory(os.getpid(), runtime.runtime_address, 4096)
    if sys.version_info < (3, 14):
        # 3.12 has no _Py_DebugOffsets, 3.13 has them but no PEP 768 buffer: refused, saying which
        with pytest.raises(AttachError) as caught:
            _pep768.parse_debug_offsets(raw)
        assert caught.value.reason == "unsupported"
        expected = "PEP 768 protocol needs 3.14" if sys.version_info >= (3, 13) else "no _Py_DebugOffsets"
        assert expected in str(caught.value)
        return
    # 3.14+: our own runtime parses, and the plan aims at the right thread states: the main
    # thread's by default, and another thread's chosen by its native id
    import threading

    get_tstate = ctypes.pythonapi.PyThreadState_Get
    get_tstate.restype = ctypes.c_void_p
    other_tstate, ready, done = [], threading.Event(), threading.Event()

    def other_thread():
        other_tstate.append(get_tstate())
        ready.set()
        done.wait(30)

    worker = threading.Thread(target=other_thread)
    worker.start()
    try:
        ready.wait(30)

        def read(address, size):
            return _runtime.read_memory(os.getpid(), address, size)

        main_plan = _pep768.plan(read, runtime.runtime_address, "/b.py", pid=os.getpid())
        assert threading.current_thread() is threading.main_thread()
        assert main_plan.thread_state == get_tstate()
        worker_plan = _pep768.plan(read, runtime.runtime_address, "/b.py", pid=os.getpid(), tid=worker.native_id)
        assert worker_plan.thread_state == other_tstate[0]
        offsets = _pep768.parse_debug_offsets(raw)
        assert worker_plan.script_path_address == (other_tstate[0] + offsets.remote_debugger_support
                                                   + offsets.debugger_script_path)
    finally:
        done.set()
        worker.join(30)


@LAYOUT_VERSIONS
def test_pep768_retract_clears_only_the_pending_flag(monkeypatch, version):
    plan = _pep768.plan(target_image(version=version).read, RUNTIME, "/b.py", pid=99)
    writes = []
    monkeypatch.setattr(_pep768, "write_memory", lambda pid, address, data: writes.append((pid, address, data)))
    _pep768.retract(99, plan)
    assert writes == [(99, MAIN_TSTATE + REMOTE_SUPPORT, struct.pack("<i", 0))]


def test_main_thread_bootstrap_hands_the_loader_to_a_new_thread(tmp_path, switch_interval):
    import _thread
    import json
    import time
    loader = tmp_path / "loader.py"
    out = tmp_path / "out"
    loader.write_text(f"import json, _thread, sys\nwith open({str(out)!r}, 'w') as f:\n"
                      f"    f.write(json.dumps([_fa_main_ident, _thread.get_ident(), _fa_switch_interval, "
                      f"sys.getswitchinterval()]))\n")
    namespace = {"__builtins__": __builtins__}
    sys.setswitchinterval(0.004)
    # WHEN the main thread runs the bootstrap (through the file the mailbox names)
    bootstrap = tmp_path / "b"
    bootstrap.write_text(_orchestrator.main_thread_bootstrap(str(loader), "/s.json"))
    exec(_orchestrator.file_bootstrap(str(bootstrap)), namespace)
    # THEN it binds nothing, the switch interval is short before the loader's thread runs,
    # and that thread is told the main thread's identity and the interval it replaced
    assert set(namespace) == {"__builtins__"}
    assert sys.getswitchinterval() == pytest.approx(STARTUP_SWITCH_INTERVAL)
    for _ in range(500):
        if out.exists() and out.read_text():
            break
        time.sleep(0.01)
    given_main, ran_on, replaced, seen_by_loader = json.loads(out.read_text())
    assert given_main == _thread.get_ident() != ran_on
    assert replaced == 0.004 and seen_by_loader == pytest.approx(STARTUP_SWITCH_INTERVAL)


def test_the_loader_puts_back_the_interval_the_bootstrap_replaced(tmp_path, switch_interval):
    from fastattach._handoff import prompt_gil_handoffs

    # GIVEN a bootstrap that shortened the interval from 0.004
    sys.setswitchinterval(STARTUP_SWITCH_INTERVAL)
    # WHEN the loader's block ends (here: one that finds nothing to do)
    with prompt_gil_handoffs(0.004):
        pass
    # THEN the application's value is back
    assert sys.getswitchinterval() == 0.004


def test_agent_bootstrap_shortens_the_interval_for_the_loader(tmp_path, switch_interval):
    import json
    loader = tmp_path / "loader.py"
    out = tmp_path / "out"
    loader.write_text(f"import json, sys\nwith open({str(out)!r}, 'w') as f:\n"
                      f"    f.write(json.dumps([_fa_switch_interval, sys.getswitchinterval()]))\n")
    sys.setswitchinterval(0.004)
    exec(bootstrap_code(str(loader), "/s.json", 42), {})
    assert json.loads(out.read_text()) == [0.004, pytest.approx(STARTUP_SWITCH_INTERVAL)]


def test_mailbox_bootstrap_fits_the_312_ring_whatever_the_paths():
    # The worst case: the producer index in the middle leaves 16 contiguous free slots. The
    # queued code names only the bootstrap file, in the session's short temporary directory.
    code = _orchestrator.file_bootstrap("/tmp/fa-abcdefgh/b")
    layout = _offsets.PENDING_CALL_LAYOUTS[0x030C01F0]
    slots = -(-(len(code) + 1) // layout["pending_call_size"])
    for producer in range(layout["pending_ncalls"]):
        assert _mailbox.choose_code_slots(producer, producer, layout["pending_ncalls"], slots) is not None


def test_file_bootstrap_of_a_missing_file_does_nothing(tmp_path):
    namespace = {"__builtins__": __builtins__}
    exec(_orchestrator.file_bootstrap(str(tmp_path / "gone")), namespace)
    assert set(namespace) == {"__builtins__"}


@given(st.dictionaries(st.text(min_size=1).filter(lambda t: "\0" not in t),
                       st.text().filter(lambda t: "\0" not in t)))
def test_settings_file_format_round_trips(fields):
    from fastattach._loader_contract import decode_fields, encode_fields
    assert decode_fields(encode_fields(fields)) == fields

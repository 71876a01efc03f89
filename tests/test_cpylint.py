"""String checks over the C sources for rules a compiler does not enforce
(msgspec's tests/unit/test_cpylint.py does the same for its C core)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SOURCE_DIR = Path(__file__).resolve().parent.parent / "src"
ENGINE_DIR = SOURCE_DIR / "fasttrace"
# Every C file and header of the repository's sources, the engine's and the attach agent's.
C_SOURCES = sorted([*SOURCE_DIR.glob("**/*.c"), *SOURCE_DIR.glob("**/*.h")])
ENGINE_SOURCES = [path for path in C_SOURCES if path.is_relative_to(ENGINE_DIR)]
# The engine (_fasttrace) as one text: the rules below hold across its files.
FASTTRACE = "\n".join(path.read_text() for path in ENGINE_SOURCES)


def _functions(source: str) -> dict[str, str]:
    """Top-level C function bodies by name (PEP 7 layout: the name starts its own line)."""
    bodies = {}
    for match in re.finditer(r"^(\w+)\(([^)]*)\)\n\{\n(.*?)^\}\n", source, re.M | re.S):
        bodies[match.group(1)] = match.group(3)
    return bodies


def test_the_code_extra_slot_is_requested_with_a_free_function():
    calls = re.findall(r"PyUnstable_Eval_RequestCodeExtraIndex\((\w+)\)", FASTTRACE)
    assert calls == ["ft_codeinfo_free"]


def test_the_code_extra_slot_is_set_once_per_code_object():
    # Replacing the pointer would leak the old table (3.12 and 3.13 do not free it).
    setters = re.findall(r"PyUnstable_Code_SetExtra\(", FASTTRACE)
    assert len(setters) == 1
    functions = _functions(FASTTRACE)
    assert "PyUnstable_Code_SetExtra(" in functions["ft_codeinfo_new"]
    # ...and only for an empty slot: the one caller reads the slot first.
    callers = [name for name, body in functions.items() if "ft_codeinfo_new(" in body]
    assert callers == ["ft_codeinfo_get"]
    get = functions["ft_codeinfo_get"]
    assert get.index("PyUnstable_Code_GetExtra(") < get.index("ft_codeinfo_new(")


def test_the_free_function_releases_what_a_table_owns():
    body = _functions(FASTTRACE)["ft_codeinfo_free"]
    assert "ft_codeinfo_clear_lines(info)" in body and "PyMem_Free(info)" in body
    clear = _functions(FASTTRACE)["ft_codeinfo_clear_lines"]
    assert "Py_CLEAR(info->lines[i].condition)" in clear


def test_no_api_newer_than_the_oldest_supported_python():
    # 3.13-only C API that compiles against 3.13 but not 3.12.
    for name in ("PyDict_GetItemStringRef", "PyDict_GetItemRef", "PyLong_AsInt(", "PyTime_MonotonicRaw",
                 "Py_BEGIN_CRITICAL_SECTION"):
        assert name not in FASTTRACE, name


@pytest.mark.parametrize("source_file", C_SOURCES, ids=lambda p: str(p.relative_to(SOURCE_DIR)))
def test_fastcall_methods_use_the_double_cast(source_file):
    """METH_FASTCALL entries need (PyCFunction)(void (*)(void)) to keep -Wcast-function-type quiet."""
    source = source_file.read_text()
    for entry in re.findall(r"\{\"\w+\",[^{}]*METH_FASTCALL[^{}]*\}", source):
        assert "(PyCFunction)(void (*)(void))" in entry, entry


def test_callbacks_return_null_only_for_the_programs_own_interrupt():
    """A trampoline that returned NULL raises inside the user's frame: only a KeyboardInterrupt
    or SystemExit may go there (issue 12, item 2), never an error of ours or pydevd's."""
    functions = _functions(FASTTRACE)
    assert "PyExc_KeyboardInterrupt" in functions["ft_belongs_to_program"]
    assert "PyExc_SystemExit" in functions["ft_belongs_to_program"]
    for name in ("Trampoline_vectorcall", "ft_forward", "ft_on_line", "ft_on_py_start", "ft_on_jump",
                 "ft_condition_holds"):
        body = functions[name]
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if "return NULL" in line or "return -2" in line:
                # The guard is the statement just before: the program's exception, or the
                # condition's verdict that it is one (-2 comes only from ft_belongs_to_program).
                context = "\n".join(lines[max(0, i - 3):i])
                assert "ft_belongs_to_program()" in context or "== -2" in context, (name, line)


def _defined_in(paths) -> dict[str, str]:
    """Function name -> the file (relative to src/fasttrace) that defines it."""
    return {name: path.name for path in paths for name in _functions(path.read_text())}


def test_no_call_on_the_event_path_crosses_a_translation_unit():
    """Everything the trampolines call is in trampoline.c or static inline in a header,
    except the cold calls named here (each runs once per code object or per change)."""
    cold = {
        "ft_codeinfo_new",              # a code object's first event
        "ft_codeinfo_load",             # the first event after breakpoints changed
        "ft_superinstructions_reform",  # 3.12: once per code object whose PY_START is disabled
    }
    functions = _functions(FASTTRACE)
    where = _defined_in(ENGINE_SOURCES)
    headers = {path.name for path in ENGINE_SOURCES if path.suffix == ".h"}
    local = {name for name, file in where.items() if file == "trampoline.c" or file in headers}
    crossing, seen, todo = set(), set(), ["Trampoline_vectorcall"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for callee in re.findall(r"\b(ft_\w+)\(", functions[name]):
            if callee in local:
                todo.append(callee)
            elif callee in where:
                crossing.add(callee)
    assert "ft_on_budgeted_hit" in seen and "ft_budget_admit" in seen, "the walk must reach the budget half"
    assert crossing <= cold, sorted(crossing - cold)
    for header in (path for path in ENGINE_SOURCES if path.suffix == ".h"):
        for name in _functions(header.read_text()):
            assert re.search(rf"^static inline [^\n]*\n{name}\(", header.read_text(), re.M), (header.name, name)


def test_version_macros_are_defined_once_in_the_header():
    header = (ENGINE_DIR / "fasttrace.h").read_text()
    assert "#define FT_PY312" in header
    for path in ENGINE_SOURCES:
        if path.name != "fasttrace.h":
            assert "PY_VERSION_HEX" not in path.read_text(), path.name
    assert (ENGINE_DIR / "superinstructions.c").read_text().count("#if FT_PY312") == 1


def test_free_threaded_builds_are_refused_before_exec_does_anything():
    """issue 13 point 5: until docs/free-threading.md is done, a free-threaded build gets a
    clear ImportError, not a module that races (nor one that silently needs the GIL)."""
    body = _functions(FASTTRACE)["fasttrace_exec"]
    code = re.sub(r"/\*.*?\*/", "", body, flags=re.S).strip()
    assert code.startswith("#ifdef Py_GIL_DISABLED\n"), "the refusal must come first in exec"
    refusal = code[:code.index("#else")]
    assert "PyErr_SetString(PyExc_ImportError" in refusal and "return -1;" in refusal
    message = " ".join(re.findall(r'"([^"]*)"', refusal))
    assert "does not support free-threaded CPython builds yet" in message
    assert "docs/free-threading.md" in message
    assert (SOURCE_DIR.parent / "docs" / "free-threading.md").is_file()
    # Until then the module says it needs the GIL.
    code = re.sub(r"/\*.*?\*/", "", FASTTRACE, flags=re.S)
    assert "{Py_mod_gil, Py_MOD_GIL_USED}" in code and "Py_MOD_GIL_NOT_USED" not in code

"""String checks over the C sources for rules a compiler does not enforce
(msgspec's tests/unit/test_cpylint.py does the same for its C core)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SOURCE_DIR = Path(__file__).resolve().parent.parent / "src"
FASTTRACE = (SOURCE_DIR / "fasttrace" / "trampoline.c").read_text()


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
    assert "PyUnstable_Code_SetExtra(" in _functions(FASTTRACE)["ft_codeinfo_get"]


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


@pytest.mark.parametrize("source_file", sorted(SOURCE_DIR.glob("*.c")), ids=lambda p: p.name)
def test_fastcall_methods_use_the_double_cast(source_file):
    """METH_FASTCALL entries need (PyCFunction)(void (*)(void)) to keep -Wcast-function-type quiet."""
    source = source_file.read_text()
    for entry in re.findall(r"\{\"\w+\",[^{}]*METH_FASTCALL[^{}]*\}", source):
        assert "(PyCFunction)(void (*)(void))" in entry, entry


def test_callbacks_never_return_null_to_the_interpreter():
    """A trampoline that returned NULL would raise inside the user's frame."""
    functions = _functions(FASTTRACE)
    for name in ("Trampoline_vectorcall", "ft_forward", "ft_on_line", "ft_on_py_start", "ft_on_jump"):
        body = functions[name]
        assert "return NULL" not in body, name

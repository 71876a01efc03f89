"""python/fastattach/_fasttrace.pyi describes the C module: the same public names, the
same public attributes on each type, and __init__ keywords the types accept."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from fastattach import _fasttrace

STUB_PATH = Path(__file__).resolve().parent.parent / "python" / "fastattach" / "_fasttrace.pyi"
STUB = ast.parse(STUB_PATH.read_text())


def _public(names) -> set[str]:
    return {name for name in names if not name.startswith("_")}


def _defined(body) -> dict[str, ast.AST]:
    names = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            names.update((target.id, node) for target in node.targets if isinstance(target, ast.Name))
    return names


STUB_NAMES = _defined(STUB.body)
CLASSES = sorted(name for name, node in STUB_NAMES.items() if isinstance(node, ast.ClassDef))


def test_the_stub_names_exactly_the_public_names_of_the_module():
    assert _public(STUB_NAMES) == _public(dir(_fasttrace))


@pytest.mark.parametrize("name", CLASSES)
def test_each_type_in_the_stub_has_the_public_attributes_of_the_real_one(name):
    stub_members = _defined(STUB_NAMES[name].body)
    assert _public(stub_members) == _public(vars(getattr(_fasttrace, name)))


def _keywords(class_name: str) -> list[str]:
    init = _defined(STUB_NAMES[class_name].body)["__init__"]
    return [arg.arg for arg in (*init.args.args[1:], *init.args.kwonlyargs)]


def test_init_keywords_in_the_stub_are_the_ones_the_types_accept():
    values = dict(disable=sys.monitoring.DISABLE, compute=lambda code: None, need_slow=lambda: False, probes=True)
    assert _keywords("Tracer") == list(values)
    _fasttrace.Tracer(**values)
    budget = _fasttrace.Budget(**{name: ("spec" if name == "spec" else 0) for name in _keywords("Budget")})
    assert set(budget.limits) == set(_keywords("Budget")) - {"spec"}


def test_the_kind_constants_the_stub_declares_are_ints():
    for name, node in STUB_NAMES.items():
        if isinstance(node, ast.AnnAssign) and not name.startswith("_"):
            assert isinstance(getattr(_fasttrace, name), int), name

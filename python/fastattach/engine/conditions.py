"""Breakpoint conditions C evaluates: compiled once, and where that is exact, also made a
function of the variables they read.

The general path (src/fasttrace/trampoline.c ft_condition_holds) is pydevd's:
``eval(condition, frame.f_globals, frame.f_locals)``.  Building the frame's locals costs
most of an evaluation (a dict filled from the fast locals on 3.12, a proxy on 3.13+), and
so does the function ``PyEval_EvalCode`` makes on every call.  So for a condition on a line
of a function, ``function_for`` compiles ``lambda <names>: (condition)`` once per code
object and globals, whose parameters are the frame variables the condition names; C reads
each with ``PyFrame_GetVar`` and calls the function by vectorcall.  Other names are read
from the frame's globals and builtins, as eval does for a name that is not a local.

C takes the general path, with pydevd's exact semantics, whenever this one could differ:
a variable the condition reads is unbound in the frame (eval would then find the name in
globals), the frame runs with other globals, the code is not a function's (module and
class bodies read names from a namespace dict), or the condition does something a function
scope changes: an assignment expression, a lambda or comprehension (scopes of their own),
``locals()``/``vars()``/``dir()``/``eval``/``exec``/``super`` without arguments, or frame
introspection (``sys._getframe``, ``inspect.currentframe``, ``f_locals``, ``f_back``).
Errors are the same either way: C swallows the exception and pydevd evaluates the
condition and reports it; KeyboardInterrupt and SystemExit go on to the program.

One difference is left: a name a debugger wrote into ``frame.f_locals`` that is not a
variable of the code (3.12 keeps it in the frame's locals dict, 3.13+ in the proxy's extra
locals) is seen by eval, and read from globals here.
"""

from __future__ import annotations

import ast
import types
import weakref

from .. import _fasttrace

# The most variables a condition's function reads (codeinfo.h FT_FAST_CONDITION_MAX_ARGS).
MAX_VARIABLES = 8

_CO_OPTIMIZED = 0x0001   # inspect.CO_OPTIMIZED: a function's code, whose locals are fast locals

# Scopes of their own, or an assignment into the frame's locals.
_OWN_SCOPE = (ast.NamedExpr, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
              ast.Await, ast.Yield, ast.YieldFrom)
# Names whose meaning depends on the scope that calls them (without arguments).
_SCOPE_DEPENDENT = frozenset({"locals", "vars", "dir", "eval", "exec", "super", "__class__"})
# Attributes that reach the calling frame, which is the condition's own frame here.
_FRAME_ATTRIBUTES = frozenset({"_getframe", "currentframe", "f_locals", "f_back", "stack"})

# condition code object -> its source.  Weak: a table entry keeps the code object alive.
_sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compile_condition(source: str, filename: str):
    """compile(source, filename, "eval"), remembered so function_for can rewrite it.

    Raises SyntaxError or ValueError as compile does."""
    code = compile(source, filename, "eval")
    _sources[code] = source
    return code


def _names_read(tree: ast.Expression) -> list[str] | None:
    """The names the expression reads, in first-seen order; None if a function scope could
    change what it computes."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, _OWN_SCOPE):
            return None
        if isinstance(node, ast.Name):
            if node.id in _SCOPE_DEPENDENT:
                return None
            if node.id not in names:
                names.append(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in _FRAME_ATTRIBUTES:
            return None
    return names


def function_for(condition, code, globals_: dict):
    """(function, names, comparison) computing condition from the variables ``names`` of a
    frame that runs code with globals_, or None where only the general path is exact.
    comparison (or None) says the same for C to compute without the function (_comparison).

    The C engine calls this (set_condition_compiler) when it loads code's table, with the
    globals of the frame running code; it must not raise for any input."""
    source = _sources.get(condition)
    if source is None or not isinstance(code, types.CodeType) or not code.co_flags & _CO_OPTIMIZED:
        return None
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    names = _names_read(tree)
    if names is None:
        return None
    frame_variables = set(code.co_varnames) | set(code.co_cellvars) | set(code.co_freevars)
    variables = tuple(name for name in names if name in frame_variables)
    if len(variables) > MAX_VARIABLES:
        return None
    arguments = ast.arguments(posonlyargs=[ast.arg(arg=name) for name in variables], args=[], vararg=None,
                              kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    function_def = ast.FunctionDef(name="condition", args=arguments, body=[ast.Return(value=tree.body)],
                                   decorator_list=[], returns=None, type_comment=None, type_params=[])
    module = ast.fix_missing_locations(ast.Module(body=[function_def], type_ignores=[]))
    try:
        compiled = compile(module, condition.co_filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return None
    body = next(const for const in compiled.co_consts if isinstance(const, types.CodeType))
    return types.FunctionType(body, globals_, "condition"), variables, _comparison(tree, variables)


# The comparison codes of function_for's third item: Py_LT..Py_GE (Include/object.h), then the
# identity and membership tests (src/fasttrace/trampoline.c ft_compare reads them).
_COMPARISONS = {ast.Lt: 0, ast.LtE: 1, ast.Eq: 2, ast.NotEq: 3, ast.Gt: 4, ast.GtE: 5,
                ast.Is: 6, ast.IsNot: 7, ast.In: 8, ast.NotIn: 9}
_VARIABLE, _CONSTANT = 0, 1


def _operand(node: ast.expr, variables: tuple[str, ...]):
    """(kind, index of the variable or the constant) for one side of a comparison, or None."""
    if isinstance(node, ast.Name) and node.id in variables:
        return _VARIABLE, variables.index(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        # The compiler folds -1 into a constant; fold it the same way.
        if isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float, complex):
            return _CONSTANT, ast.literal_eval(node)
        return None
    if isinstance(node, ast.Constant):
        return _CONSTANT, node.value
    if isinstance(node, ast.Tuple) and all(isinstance(item, ast.Constant) for item in node.elts):
        return _CONSTANT, ast.literal_eval(node)   # folded into one constant by the compiler too
    return None


def _comparison(tree: ast.Expression, variables: tuple[str, ...]):
    """(code, left kind, left, right kind, right) when the condition is one comparison of frame
    variables and constants, which C then makes itself (PyObject_RichCompare, identity,
    PySequence_Contains: what COMPARE_OP, IS_OP and CONTAINS_OP do) without calling the
    function; None otherwise."""
    node = tree.body
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return None
    code = _COMPARISONS.get(type(node.ops[0]))
    left, right = _operand(node.left, variables), _operand(node.comparators[0], variables)
    if code is None or left is None or right is None or (left[0] == right[0] == _CONSTANT):
        return None
    return (code, *left, *right)


_fasttrace.set_condition_compiler(function_for)

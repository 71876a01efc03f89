"""Redaction: values whose name says they are secret never leave the process in a probe's output.

A name matches when, lowered and with '-' read as '_', it contains one of ``redact_names``
(configure(); the default list is ``_options.DEFAULT_REDACT_NAMES``).  Names are variable
names (a snapshot's locals), dict keys, attribute names, and the names a log template's
``{expression}`` reads.  A value of one of ``redact_types`` is redacted whatever its name.
A redacted value shows as ``<redacted>``, and each output says how many were redacted.

Used by production.capture (snapshots) and by Template (logpoint and probe messages), so every
output of fastattach.probe, DAP and OpenTelemetry alike, carries the redacted text only.
"""

from __future__ import annotations

import ast
import reprlib

from .. import _options

REDACTED = "<redacted>"
_SCALARS = (str, bytes, int, float, complex, bool, type(None))


class Rules:
    """What to redact; made once per options snapshot (rules_for)."""

    __slots__ = ("names", "types", "type_names")

    def __init__(self, names=(), types=()):
        self.names = tuple(names)
        self.types = tuple(t for t in types if isinstance(t, type))
        self.type_names = frozenset(t for t in types if isinstance(t, str))

    def name_matches(self, name) -> bool:
        if not isinstance(name, str) or not self.names:
            return False
        folded = name.lower().replace("-", "_")
        return any(part in folded for part in self.names)

    def type_matches(self, value) -> bool:
        if self.types and isinstance(value, self.types):
            return True
        if self.type_names:
            for klass in type(value).__mro__:
                if f"{klass.__module__}.{klass.__qualname__}" in self.type_names:
                    return True
        return False

    def hides(self, name, value) -> bool:
        return self.name_matches(name) or self.type_matches(value)


_cache: dict = {}
DEFAULT_RULES = Rules(_options.DEFAULTS["redact_names"], _options.DEFAULTS["redact_types"])


def rules_for(options: dict) -> Rules:
    """The Rules of an options snapshot (validated by _options: names folded, types checked)."""
    key = (options["redact_names"], options["redact_types"])
    rules = _cache.get(key)
    if rules is None:
        if len(_cache) > 16:
            _cache.clear()
        rules = _cache[key] = Rules(*key)
    return rules


def _sensitive_attributes(rules: Rules, value) -> list | None:
    """(name, value) of an object's instance attributes if one of their names matches, else None."""
    if isinstance(value, _SCALARS) or isinstance(value, type):
        return None
    try:
        attributes = vars(value)
    except TypeError:
        attributes = {}
        for klass in type(value).__mro__:
            for slot in getattr(klass, "__slots__", ()):
                if isinstance(slot, str) and slot not in attributes and not slot.startswith("__"):
                    try:
                        attributes[slot] = object.__getattribute__(value, slot)
                    except AttributeError:
                        pass
    if not isinstance(attributes, dict) or not any(rules.name_matches(name) for name in attributes):
        return None
    return list(attributes.items())


class RedactingRepr(reprlib.Repr):
    """reprlib's size limits, and redaction inside containers and objects; counts what it hid."""

    def __init__(self, rules: Rules, limit: int, *, items: int = 10, levels: int = 2):
        super().__init__()
        self.rules = rules
        self.redacted = 0
        self.maxstring = self.maxother = self.maxlong = limit
        self.maxlevel = levels
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = items
        self.maxdict = items

    def hide(self) -> str:
        self.redacted += 1
        return REDACTED

    def repr1(self, x, level):
        if self.rules.type_matches(x):
            return self.hide()
        if isinstance(x, dict) and type(x) is not dict:
            return self._mapping(x, level, f"{type(x).__name__}(", ")")   # OrderedDict, defaultdict, ...
        attributes = _sensitive_attributes(self.rules, x)
        if attributes is not None:
            # Its own __repr__ may show the secret: we render it from its attributes instead.
            if level <= 0:
                return f"{type(x).__name__}(...)"
            parts = [f"{name}={self.hide() if self.rules.hides(name, value) else self.repr1(value, level - 1)}"
                     for name, value in attributes[: self.maxdict]]
            more = ", ..." if len(attributes) > self.maxdict else ""
            return f"{type(x).__name__}({', '.join(parts)}{more})"
        return super().repr1(x, level)

    def repr_dict(self, x, level):
        return self._mapping(x, level, "", "")

    def _mapping(self, x, level, prefix, suffix):
        if not x:
            return f"{prefix}{{}}{suffix}"
        if level <= 0:
            return f"{prefix}{{...}}{suffix}"
        parts = []
        for key in list(x)[: self.maxdict]:
            try:
                value = x[key]
            except Exception:   # a mapping that changes or refuses under us
                continue
            shown = self.hide() if self.rules.hides(key, value) else self.repr1(value, level - 1)
            parts.append(f"{self.repr1(key, level - 1)}: {shown}")
        more = ", ..." if len(x) > self.maxdict else ""
        return f"{prefix}{{{', '.join(parts)}{more}}}{suffix}"


def safe_repr(r: RedactingRepr, value, limit: int) -> str:
    try:
        text = r.repr(value)
    except Exception as exc:   # a user __repr__ may raise anything
        text = f"<repr failed: {type(exc).__name__}>"
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


# -- log templates --------------------------------------------------------------------------

def _reads_sensitive(rules: Rules, node: ast.AST) -> bool:
    """The expression names a variable, attribute or str key that matches."""
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and rules.name_matches(child.id):
            return True
        if isinstance(child, ast.Attribute) and rules.name_matches(child.attr):
            return True
        if isinstance(child, ast.keyword) and rules.name_matches(child.arg):
            return True
        if (isinstance(child, ast.Subscript) and isinstance(child.slice, ast.Constant)
                and rules.name_matches(child.slice.value)):
            return True
    return False


class Template:
    """A log message: literal text and `{expression}` parts, each expression evaluated on its own
    so that one that reads a secret is never evaluated, and a value that holds one (a dict, an
    object) is shown redacted.  ``render(frame)`` -> (text, number of values redacted)."""

    __slots__ = ("format", "parts", "rules", "invalid")

    def __init__(self, format_text: str, expressions: list[str], rules: Rules):
        self.format = format_text
        self.rules = rules
        self.invalid = False
        self.parts = []   # (code or None if redacted, source)
        for source in expressions:
            try:
                tree = ast.parse(source.strip(), mode="eval")
            except SyntaxError:
                self.invalid = True
                self.parts.append((None, source))
                continue
            if _reads_sensitive(rules, tree):
                self.parts.append((None, source))
            else:
                self.parts.append((compile(tree, "<log message>", "eval"), source))

    @classmethod
    def from_pydevd_expression(cls, expression: str | None, rules: Rules) -> Template | None:
        """pydevd's form of a DAP logMessage (convert_dap_log_message_to_expression): "'text %s' % (a, b,)"
        or "'text'"; None if it is neither."""
        if not expression:
            return None
        try:
            tree = ast.parse(expression, mode="eval").body
        except SyntaxError:
            return None
        if isinstance(tree, ast.Constant) and isinstance(tree.value, str):
            return cls(tree.value.replace("%", "%%"), [], rules)
        if (isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Mod) and isinstance(tree.left, ast.Constant)
                and isinstance(tree.left.value, str) and isinstance(tree.right, ast.Tuple)):
            return cls(tree.left.value, [ast.get_source_segment(expression, e) or ast.unparse(e)
                                         for e in tree.right.elts], rules)
        return None

    @classmethod
    def from_log_message(cls, message: str, rules: Rules) -> Template:
        """A DAP logMessage ("i={i} user={user.name}"; '{{' and '}}' are literal braces)."""
        text, expressions, i = [], [], 0
        while i < len(message):
            c = message[i]
            if c in "{}" and message[i + 1: i + 2] == c:
                text.append(c)
                i += 2
            elif c == "{":
                depth, j = 1, i + 1
                while j < len(message) and depth:
                    depth += {"{": 1, "}": -1}.get(message[j], 0)
                    j += 1
                if depth:
                    template = cls("", [], rules)
                    template.invalid = True
                    return template
                expressions.append(message[i + 1: j - 1])
                text.append("%s")
                i = j
            else:
                text.append("%%" if c == "%" else c)
                i += 1
        return cls("".join(text), expressions, rules)

    def render(self, frame, repr_chars: int = 10_000) -> tuple[str, int]:
        if self.invalid:
            return "<invalid log message expression>", 0
        # Roomier than a snapshot's limits: pydevd shows str(value) in full (the byte budget cuts it).
        r = RedactingRepr(self.rules, repr_chars, items=100, levels=6)
        values = []
        for code, _ in self.parts:
            if code is None:
                values.append(r.hide())
                continue
            try:
                value = eval(code, frame.f_globals, frame.f_locals)
            except Exception as exc:
                # As pydevd, which evaluates the whole message as one expression: the first
                # failing part makes the message that exception's text alone.
                try:
                    return str(exc), r.redacted
                except Exception:
                    return f"<{type(exc).__name__}>", r.redacted
            if self.rules.type_matches(value):
                values.append(r.hide())
            elif isinstance(value, (dict, list, tuple, set, frozenset)) or (
                    _sensitive_attributes(self.rules, value) is not None):
                values.append(safe_repr(r, value, repr_chars))
            else:
                try:
                    values.append(str(value))   # pydevd's %s
                except Exception as exc:
                    values.append(f"<str failed: {type(exc).__name__}>")
        try:
            return self.format % tuple(values), r.redacted
        except (TypeError, ValueError):
            return "<invalid log message expression>", r.redacted

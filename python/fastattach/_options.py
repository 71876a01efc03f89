"""Every configure() option: its default, its validation, and a snapshot of the current values.

Standard library only, and cheap: the public API and the command line import it before
any client exists. A snapshot is a plain dict that is never changed once made; configure()
makes a new one (``replace``) and hands it to whoever reads options (see _api._Process).
See docs/production.md for what the budget and production options do.
"""

from __future__ import annotations

DEFAULT_REDACT_NAMES = ("password", "passwd", "passphrase", "secret", "token", "api_key", "apikey",
                        "authorization", "auth_header", "cookie", "session", "private_key", "privatekey",
                        "credit_card", "creditcard", "card_number", "cvv", "ssn", "credential", "access_key")

DEFAULTS: dict[str, object] = {
    "log_dir": None,
    "production": False,
    "logpoint_messages_per_second": 50.0,
    "logpoint_bytes_per_second": 20_000.0,
    # Time governs conditions (docs/production.md, "The budget policy"): a count cap would
    # pause a cheap condition on a hot line long before it costs anything, and lose the rare
    # true case it waits for.  Count caps stay only where time is not fully measured.
    "condition_evaluations_per_second": 0.0,
    "pydevd_condition_evaluations_per_second": 5_000.0,
    "condition_cpu_fraction": 0.10,
    "probe_cpu_fraction": 0.01,
    "budget_cooldown": 30.0,
    "snapshots_per_second": 1.0,
    "snapshot_max_bytes": 32 * 1024,
    "snapshot_frames": 3,
    "snapshot_stack_depth": 30,
    "snapshot_repr_chars": 200,
    "snapshot_output": "both",
    "production_expiry": 3600.0,
    "probe_logging": True,
    # With opentelemetry (the otel extra) imported and configured by the application: each
    # probe record is also an OTel log record, and with otel_span_events an event on the current span.
    "otel_logs": True,
    "otel_span_events": False,
    # Values whose variable name, dict key or attribute name contains one of these (ignoring
    # case, '-' read as '_') show as <redacted> in snapshots and log messages; and values of
    # these types (classes, or "module.QualName" strings), whatever their name.
    "redact_names": DEFAULT_REDACT_NAMES,
    "redact_types": (),
    "log_to_stderr": False,
    # debugpy's names, so that a program's debugpy.configure() call works unchanged. qt
    # takes only the value fastattach honours (see DEBUGPY_REFUSALS for why).
    "qt": "none",
    # Children debugged (see _subprocess.py): on by default, as in debugpy; a client's attach
    # argument "subProcess": false turns it off for its session.
    "subProcess": True,
    # Seconds a child waits, before its first line of its own, for the client it was announced
    # to (its configurationDone); then it runs on without a debugger.
    "subprocess_grace_period": 2.0,
}
# Options whose change gives every breakpoint a fresh budget (all but where logs go and
# debugpy's names, which can only keep their one value).
BUDGET_OPTIONS = frozenset(DEFAULTS) - {"log_dir", "log_to_stderr", "qt", "subProcess", "subprocess_grace_period"}

# debugpy's configure() options that fastattach cannot honour: name -> what fastattach does
# instead. A debugpy user must hear of the difference at once, not find it out later.
_SAME_INTERPRETER = ("fastattach debugs a child with the interpreter, environment and arguments it was "
                     "started with (subProcess)")
DEBUGPY_REFUSALS = {
    "qt": "qt must be 'none': fastattach does not patch Qt's threads (call debug_this_thread() "
          "in a QThread to debug it)",
    "python": f"python is not supported: it picks the interpreter of debugged subprocesses, and "
              f"{_SAME_INTERPRETER}",
    "pythonEnv": f"pythonEnv is not supported: it sets the environment of debugged subprocesses, and "
                 f"{_SAME_INTERPRETER}",
    "pythonArgs": f"pythonArgs is not supported: it sets the arguments of debugged subprocesses, and "
                  f"{_SAME_INTERPRETER}",
}

_BOOLEANS = ("production", "probe_logging", "log_to_stderr", "otel_logs", "otel_span_events", "subProcess")
_NONNEGATIVE_FLOATS = ("logpoint_messages_per_second", "logpoint_bytes_per_second",
                       "condition_evaluations_per_second", "pydevd_condition_evaluations_per_second",
                       "condition_cpu_fraction", "probe_cpu_fraction", "budget_cooldown",
                       "snapshots_per_second", "production_expiry", "subprocess_grace_period")
_FRACTIONS = ("condition_cpu_fraction", "probe_cpu_fraction")
_POSITIVE_INTS = ("snapshot_max_bytes", "snapshot_frames", "snapshot_stack_depth", "snapshot_repr_chars")
SNAPSHOT_OUTPUTS = ("output", "event", "both")
MIN_SNAPSHOT_BYTES = 512


def validate(name: str, value):
    """The value to store for option `name`; ValueError says what is wrong."""
    if name in DEBUGPY_REFUSALS and (
            name not in DEFAULTS or type(value) is not type(DEFAULTS[name]) or value != DEFAULTS[name]):
        raise ValueError(f"configure({name}=...): {DEBUGPY_REFUSALS[name]}")
    if name == "qt":
        return value   # the one accepted value, just checked
    if name not in DEFAULTS:
        raise ValueError(f"unknown fastattach option {name!r}; known: {', '.join(sorted(DEFAULTS))}")
    if name == "log_dir":
        return value
    if name in _BOOLEANS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, not {value!r}")
        return value
    if name in _NONNEGATIVE_FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0 (0 = unlimited / never), not {value!r}")
        if name in _FRACTIONS and value > 1:
            raise ValueError(f"{name} is a fraction of one core (0.01 = 1%), not {value!r}")
        return float(value)
    if name in _POSITIVE_INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, not {value!r}")
        if name == "snapshot_max_bytes" and value < MIN_SNAPSHOT_BYTES:
            raise ValueError(f"snapshot_max_bytes must be at least {MIN_SNAPSHOT_BYTES}, not {value!r}")
        return value
    if name == "redact_names":
        return _redact_names(value)
    if name == "redact_types":
        return _redact_types(value)
    if value not in SNAPSHOT_OUTPUTS:   # snapshot_output, the only one left
        raise ValueError(f"snapshot_output must be one of {', '.join(SNAPSHOT_OUTPUTS)}, not {value!r}")
    return value


def _items(name: str, value) -> tuple:
    """A list option given as a list, a tuple, or a comma-separated str (the command line's form)."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(value)
    raise ValueError(f"{name} must be a list of names (or one comma-separated str), not {value!r}")


def _redact_names(value) -> tuple:
    names = _items("redact_names", value)
    for item in names:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"redact_names must hold non-empty strs, not {item!r}")
    # Matching is a substring test on the name lowered with '-' read as '_'; keep the list that way.
    return tuple(dict.fromkeys(item.strip().lower().replace("-", "_") for item in names))


def _redact_types(value) -> tuple:
    types = _items("redact_types", value)
    for item in types:
        if isinstance(item, type):
            continue
        if not isinstance(item, str) or not item.strip() or "." not in item.strip(".") or " " in item:
            raise ValueError(f"redact_types must hold classes or 'module.QualName' strs, not {item!r}")
    return tuple(item.strip() if isinstance(item, str) else item for item in types)


def parse_text(name: str, text: str):
    """The value of `--configure-NAME TEXT`, read as debugpy's command line reads it: by the
    type of the option's default (a boolean is true or false in any case); ValueError if
    NAME is unknown or TEXT is not of that type."""
    if name in DEBUGPY_REFUSALS and name not in DEFAULTS:
        raise ValueError(f"--configure-{name}: {DEBUGPY_REFUSALS[name]}")
    if name not in DEFAULTS:
        raise ValueError(f"--configure-{name}: unknown option; known: {', '.join(sorted(DEFAULTS))}")
    default = DEFAULTS[name]
    try:
        if isinstance(default, bool):
            return {"true": True, "false": False}[text.lower()]
        if isinstance(default, (int, float)):
            return type(default)(text)
    except (KeyError, ValueError):
        raise ValueError(f"--configure-{name}: {text!r} is not a {type(default).__name__}") from None
    return text   # the str options, and log_dir (None by default, a path when given)


def replace(options: dict, changes: dict) -> dict:
    """A new snapshot: `options` with `changes` validated and applied. All or nothing."""
    validated = {name: validate(name, value) for name, value in changes.items()}
    return {**options, **validated}

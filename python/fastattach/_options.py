"""Every configure() option: its default, its validation, and a snapshot of the current values.

Standard library only, and cheap: the public API and the command line import it before
any client exists. A snapshot is a plain dict that is never changed once made; configure()
makes a new one (``replace``) and hands it to whoever reads options (see _api._Process).
See docs/production.md for what the budget and production options do.
"""

from __future__ import annotations

DEFAULTS: dict[str, object] = {
    "log_dir": None,
    "production": False,
    "logpoint_messages_per_second": 50.0,
    "logpoint_bytes_per_second": 20_000.0,
    "condition_evaluations_per_second": 5_000.0,
    "condition_cpu_fraction": 0.01,
    "budget_cooldown": 30.0,
    "snapshots_per_second": 1.0,
    "snapshot_max_bytes": 32 * 1024,
    "snapshot_frames": 3,
    "snapshot_stack_depth": 30,
    "snapshot_repr_chars": 200,
    "snapshot_output": "both",
    "production_expiry": 3600.0,
    "probe_logging": True,
}
# Options whose change gives every breakpoint a fresh budget (all but where logs go).
BUDGET_OPTIONS = frozenset(DEFAULTS) - {"log_dir"}

_BOOLEANS = ("production", "probe_logging")
_NONNEGATIVE_FLOATS = ("logpoint_messages_per_second", "logpoint_bytes_per_second",
                       "condition_evaluations_per_second", "condition_cpu_fraction", "budget_cooldown",
                       "snapshots_per_second", "production_expiry")
_POSITIVE_INTS = ("snapshot_max_bytes", "snapshot_frames", "snapshot_stack_depth", "snapshot_repr_chars")
SNAPSHOT_OUTPUTS = ("output", "event", "both")
MIN_SNAPSHOT_BYTES = 512


def validate(name: str, value):
    """The value to store for option `name`; ValueError says what is wrong."""
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
        if name == "condition_cpu_fraction" and value > 1:
            raise ValueError(f"condition_cpu_fraction is a fraction of one core (0.01 = 1%), not {value!r}")
        return float(value)
    if name in _POSITIVE_INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, not {value!r}")
        if name == "snapshot_max_bytes" and value < MIN_SNAPSHOT_BYTES:
            raise ValueError(f"snapshot_max_bytes must be at least {MIN_SNAPSHOT_BYTES}, not {value!r}")
        return value
    if value not in SNAPSHOT_OUTPUTS:   # snapshot_output, the only one left
        raise ValueError(f"snapshot_output must be one of {', '.join(SNAPSHOT_OUTPUTS)}, not {value!r}")
    return value


def replace(options: dict, changes: dict) -> dict:
    """A new snapshot: `options` with `changes` validated and applied. All or nothing."""
    validated = {name: validate(name, value) for name, value in changes.items()}
    return {**options, **validated}

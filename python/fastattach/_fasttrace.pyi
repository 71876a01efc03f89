"""Type stub of the C extension fastattach._fasttrace (src/fasttrace/).

C trampolines for pydevd's sys.monitoring callbacks, with a per-code breakpoint cache.
tests/test_fasttrace_stub.py checks that this stub and the module name the same things.
"""

from collections.abc import Buffer, Callable
from types import CodeType
from typing import Any, Final, Literal, final

# What a trampoline wraps (Tracer.trampoline's kind).  Not sys.monitoring's event numbers.
PY_START: Final[int]
LINE: Final[int]
JUMP: Final[int]

# compute(code)'s answer: None, or (function_bp, ((line, condition | None[, budget | None]), ...)).
_Entry = tuple[int, CodeType | None] | tuple[int, CodeType | None, Budget | None]
_Answer = tuple[object, tuple[_Entry, ...]] | None

def set_superinstruction_table(caches: Buffer, bases: Buffer, ops: Buffer, /) -> None:
    """3.12: opcode tables (256, 256 and 8 bytes) for forming superinstructions again."""

def reform_superinstructions(code: CodeType, /) -> int:
    """Form code's superinstructions again if nothing but RESUME is instrumented; how many."""

def set_condition_compiler(
    compiler: Callable[[CodeType, CodeType, dict[str, Any]],
                       tuple[Callable[..., Any], tuple[str, ...], tuple[int, int, Any, int, Any] | None] | None]
    | None, /,
) -> None:
    """compiler(condition, code, globals) -> (function, names, comparison) or None, asked when a
    per-code table is loaded: C then computes the condition as function(*frame variables named),
    or makes the comparison itself (engine/conditions.py)."""

def seen_by_filter(code: CodeType, /) -> bool:
    """Whether an event of this code object reached the filter (its code-extra slot holds a table)."""

@final
class Tracer:
    """State shared by the trampolines of one pydevd, or (probes=True) of the always-on probes."""

    def __init__(self, disable: object, compute: Callable[[CodeType], _Answer],
                 need_slow: Callable[[], object], *, probes: bool = False) -> None: ...
    def trampoline(self, kind: int, target: Callable[..., Any], /) -> Trampoline: ...
    def breakpoints_changed(self) -> None: ...
    def enter_slow(self) -> None: ...
    def note_local_events(self, code: CodeType, line_enabled: object, /) -> None: ...
    def cached_lines(self, code: CodeType, /) -> tuple[int, ...] | None: ...
    def has_table(self, code: CodeType, /) -> bool: ...
    def stats(self) -> dict[str, int]: ...
    def set_hooks(self, probe: Callable[[object], int] | None,
                  on_trip: Callable[[Budget], object] | None, /) -> None: ...
    def take_error(self) -> BaseException | None: ...
    def close(self) -> None: ...
    @property
    def slow(self) -> bool: ...
    @property
    def generation(self) -> int: ...

@final
class Trampoline:
    """A callback that filters events in C before pydevd's callback sees them.

    Made only by Tracer.trampoline(); registered with sys.monitoring.register_callback."""

    def __call__(self, *args: object) -> Any: ...
    @property
    def target(self) -> Callable[..., Any]: ...
    @property
    def kind(self) -> int: ...

@final
class Budget:
    """One breakpoint's limits, checked in C on each hit."""

    def __init__(self, spec: object, *, eval_rate: float = 0, output_rate: float = 0, byte_rate: float = 0,
                 time_fraction: float = 0, counts_evaluations: bool = False, probe: bool = False) -> None: ...
    def resume(self) -> bool: ...
    def pause(self) -> bool: ...
    def charge(self, ns: int, /) -> bool: ...
    def stats(self) -> dict[str, int]: ...
    @property
    def spec(self) -> object: ...
    @property
    def paused(self) -> bool: ...
    @property
    def reason(self) -> Literal["evaluations", "outputs", "bytes", "time", "external"] | None: ...
    @property
    def paused_at(self) -> int: ...
    @property
    def first_hit_at(self) -> int: ...
    @property
    def limits(self) -> dict[str, float | bool]: ...

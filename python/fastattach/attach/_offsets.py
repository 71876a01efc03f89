"""Byte offsets into CPython internals that no public table describes, per exact version.

3.12 has no ``_Py_DebugOffsets`` at all, and the 3.13 table does not cover the pending-call
queue, so the mailbox needs these. They come from ``offsetof()`` compiled against each
version's own ``include/python3.1x/internal`` headers; tests/test_attach_layouts.py recompiles
them against the running interpreter and checks this table. An exact version that is missing
here is never guessed: the orchestrator uses the ptrace injector instead, which needs none.
"""

from __future__ import annotations

# Keyed by Py_Version / PY_VERSION_HEX.
PENDING_CALL_LAYOUTS: dict[int, dict[str, int]] = {
    0x030C01F0: {  # 3.12.1
        "runtime_pending_main": 2016,       # offsetof(_PyRuntimeState, ceval.pending_mainthread)
        "runtime_interpreters_main": 48,    # offsetof(_PyRuntimeState, interpreters.main)
        "pending_calls": 24,
        "pending_call_size": 16,            # {func, arg}
        "pending_ncalls": 32,               # NPENDINGCALLS
        "pending_first": 536,
        "pending_last": 540,
        "pending_calls_to_do": 16,
        "pending_busy": 0,
        "interp_eval_breaker": 368,         # offsetof(PyInterpreterState, ceval.eval_breaker)
    },
    0x030D00F0: {  # 3.13.0
        "runtime_pending_main": 2640,
        "runtime_main_tstate": 664,         # offsetof(_PyRuntimeState, main_tstate)
        "pending_calls": 24,
        "pending_call_size": 24,            # {func, arg, flags}
        "pending_ncalls": 300,              # PENDINGCALLSARRAYSIZE
        "pending_first": 7224,
        "pending_next": 7228,
        "pending_npending": 12,
        "pending_max": 16,
        "pending_mutex": 8,
        "pending_handling_thread": 0,
        "call_flags": 16,
        "tstate_eval_breaker": 24,          # offsetof(PyThreadState, eval_breaker)
        "calls_to_do_bit": 4,               # _PY_CALLS_TO_DO_BIT
        "mainthreadonly_flag": 1,           # _Py_PENDING_MAINTHREADONLY
    },
}

# The C programs that produced the table, kept next to it so a new patch version is one
# compile away: cc -I$(python -c 'import sysconfig;print(sysconfig.get_paths()["include"])') ...
GENERATOR_SOURCES: dict[tuple[int, int], str] = {
    (3, 12): r'''
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#define P(name, expr) printf("%s %zu\n", name, (size_t)(expr))
int main(void) {
    P("version_hex", PY_VERSION_HEX);
    P("runtime_pending_main", offsetof(_PyRuntimeState, ceval.pending_mainthread));
    P("runtime_interpreters_main", offsetof(_PyRuntimeState, interpreters.main));
    P("pending_calls", offsetof(struct _pending_calls, calls));
    P("pending_call_size", sizeof(struct _pending_call));
    P("pending_ncalls", NPENDINGCALLS);
    P("pending_first", offsetof(struct _pending_calls, first));
    P("pending_last", offsetof(struct _pending_calls, last));
    P("pending_calls_to_do", offsetof(struct _pending_calls, calls_to_do));
    P("pending_busy", offsetof(struct _pending_calls, busy));
    P("interp_eval_breaker", offsetof(PyInterpreterState, ceval.eval_breaker));
    return 0;
}
''',
    (3, 13): r'''
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_ceval.h"
#define P(name, expr) printf("%s %zu\n", name, (size_t)(expr))
int main(void) {
    P("version_hex", PY_VERSION_HEX);
    P("runtime_pending_main", offsetof(_PyRuntimeState, ceval.pending_mainthread));
    P("runtime_main_tstate", offsetof(_PyRuntimeState, main_tstate));
    P("pending_calls", offsetof(struct _pending_calls, calls));
    P("pending_call_size", sizeof(struct _pending_call));
    P("pending_ncalls", PENDINGCALLSARRAYSIZE);
    P("pending_first", offsetof(struct _pending_calls, first));
    P("pending_next", offsetof(struct _pending_calls, next));
    P("pending_npending", offsetof(struct _pending_calls, npending));
    P("pending_max", offsetof(struct _pending_calls, max));
    P("pending_mutex", offsetof(struct _pending_calls, mutex));
    P("pending_handling_thread", offsetof(struct _pending_calls, handling_thread));
    P("call_flags", offsetof(struct _pending_call, flags));
    P("tstate_eval_breaker", offsetof(PyThreadState, eval_breaker));
    P("calls_to_do_bit", _PY_CALLS_TO_DO_BIT);
    P("mainthreadonly_flag", _Py_PENDING_MAINTHREADONLY);
    return 0;
}
''',
}

/* fasttrace.h: what every file of the _fasttrace extension shares.

   _fasttrace puts C trampolines in front of pydevd's sys.monitoring callbacks and
   keeps a per-code breakpoint-line cache in the code object's co_extra slot.

   pydevd (debugpy) registers its PY_START / LINE / JUMP callbacks for tool 0.
   python/fastattach/_gate.py wraps each of them in a Trampoline.  While nobody is
   stepping or suspended, a trampoline answers "no breakpoint here" with
   sys.monitoring.DISABLE without entering pydevd, and filters condition-only
   breakpoints whose precompiled condition is false.  Everything else is forwarded
   to pydevd's callback by vectorcall, which pushes no Python frame, so pydevd's
   sys._getframe() still sees the user's frame.

   Python decides (which lines of a code object carry breakpoints, compiled
   conditions, whether anyone is stepping); C caches the decision.  Setup and
   teardown of sys.monitoring live in _gate.py.

   One file per concern:
     fasttrace.h          this header: module state, enums, counters, clocks, version macros
     module.c             module init (exec/traverse/clear/free) and the module functions
     codeinfo.{h,c}       the per-code table in co_extra (codeinfo.h: the hot lookups)
     budget.{h,c}         the Budget type (budget.h: token buckets and the budget half of a hit)
     trampoline.c         Tracer and Trampoline, slow mode, the PY_START / LINE / JUMP callbacks
     superinstructions.c  CPython 3.12 only: forming superinstructions again

   Every helper the event path calls is static inline in a header or lives in
   trampoline.c, so no call on the event path crosses a translation unit.  Functions
   shared between files are hidden (CMakeLists.txt: C_VISIBILITY_PRESET hidden), so
   only PyInit__fasttrace is exported. */
#ifndef FASTTRACE_H
#define FASTTRACE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------------ versions */

/* The version macros, defined once.  CPython 3.12's _Py_Instrument takes every
   superinstruction of a code object away; 3.13 makes them in the compiler, and
   instrumentation keeps them (see superinstructions.c). */
#define FT_PY312 (PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000)

/* ------------------------------------------------------------------ module state */

/* What a trampoline wraps: the values of the module constants PY_START, LINE and JUMP
   (not sys.monitoring's event numbers, which differ between versions). */
enum ft_kind { FT_PY_START = 0, FT_LINE = 1, FT_JUMP = 2 };

/* reform_caches[op] for an opcode that means "leave this code alone". */
#define FT_UNTOUCHABLE 255

/* The order of set_superinstruction_table()'s third argument (python/fastattach/_requicken.py
   SUPERINSTRUCTION_OPS builds it). */
enum {
    FT_LOAD_FAST, FT_LOAD_CONST, FT_STORE_FAST, FT_LOAD_FAST__LOAD_FAST, FT_LOAD_FAST__LOAD_CONST,
    FT_STORE_FAST__LOAD_FAST, FT_STORE_FAST__STORE_FAST, FT_LOAD_CONST__LOAD_FAST, FT_REFORM_OPS
};

typedef struct {
    PyTypeObject *tracer_type;      /* owned */
    PyTypeObject *trampoline_type;  /* owned */
    PyTypeObject *budget_type;      /* owned */
    PyObject *condition_compiler;   /* owned: compiler(condition, code, globals) -> (function, names,
                                       comparison) | None
                                       (engine/conditions.py function_for), or NULL: conditions are only
                                       evaluated by the general path */
    uint64_t last_stamp;            /* hands out Tracer ids and breakpoint generations alike,
                                       so a new tracer never matches a table cached by an old one */
    Py_ssize_t extra_index;         /* code-extra slot of the debugger's Tracer: one per interpreter,
                                       never released */
    Py_ssize_t probe_extra_index;   /* the probes' Tracer's own slot (engine/probes.py), so the two
                                       tools never overwrite each other's per-code tables */
    /* 3.12 only, set by set_superinstruction_table(); see superinstructions.c. */
    int reform_ready;
    uint8_t reform_caches[256];     /* inline cache entries per opcode; FT_UNTOUCHABLE: leave the code */
    uint8_t reform_bases[256];      /* the base opcode of each specialized or instrumented one */
    uint8_t reform_ops[FT_REFORM_OPS];   /* opcodes in the order of the enum above */
} fasttrace_state;

static inline fasttrace_state *
get_fasttrace_state(PyObject *module)
{
    return (fasttrace_state *)PyModule_GetState(module);
}

/* A breakpoint's budget (budget.h); per-code tables own references to them. */
typedef struct BudgetObject BudgetObject;

/* Defined in module.c; the types find their module (and its state) through it. */
extern struct PyModuleDef fasttrace_module;
/* Defined in trampoline.c and budget.c; module.c makes the types from them. */
extern PyType_Spec Tracer_spec;
extern PyType_Spec Trampoline_spec;
extern PyType_Spec Budget_spec;

/* ------------------------------------------------------------------ counters */

/* A Tracer's event counters, one X-macro so the enum and the names of Tracer.stats()
   cannot drift apart: X(ENUM_SUFFIX, "name in stats()"). */
#define FT_TRACER_STATS(X)                                  \
    X(LINE_DISABLE, "line_disable")                         \
    X(LINE_FORWARD, "line_forward")                         \
    X(CONDITION_FALSE, "condition_false")                   \
    X(CONDITION_FORWARD, "condition_forward")               \
    X(CONDITION_FAST, "condition_fast")                     \
    X(START_DISABLE, "start_disable")                       \
    X(START_FORWARD, "start_forward")                       \
    X(JUMP_DISABLE, "jump_disable")                         \
    X(JUMP_FORWARD, "jump_forward")                         \
    X(SLOW_FORWARD, "slow_forward")                         \
    X(COMPUTE, "compute")                                   \
    X(SLOW_CHECKS, "slow_checks")                           \
    X(ERRORS, "errors")                                     \
    X(BUDGET_PAUSED, "budget_paused")                       \
    X(BUDGET_DROPPED, "budget_dropped")                     \
    X(PROBE, "probe")                                       \
    X(TRIPS, "trips")                                       \
    X(SUPERINSTRUCTIONS, "superinstructions_formed")

enum ft_stat {
#define FT_STAT_ENUM(NAME, name) ST_##NAME,
    FT_TRACER_STATS(FT_STAT_ENUM)
#undef FT_STAT_ENUM
    ST_COUNT
};

/* One unsigned long long counter of an object: its name in stats() and where it is. */
typedef struct {
    const char *name;
    size_t offset;   /* from the start of the object */
} ft_counter;

#define FT_COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

/* {name: value} for n counters of object (Tracer.stats, Budget.stats); a new
   reference, or NULL with an exception set.  module.c. */
PyObject *ft_counters_dict(const void *object, const ft_counter *counters, size_t n);

/* ------------------------------------------------------------------ clocks */

#define FT_NS_PER_S 1000000000

/* CLOCK_MONOTONIC in ns, the clock of time.monotonic_ns(): budgets measure hits and
   stamp pauses with it, and Python compares those stamps with its own clock. */
static inline int64_t
ft_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * FT_NS_PER_S + ts.tv_nsec;
}

/* CLOCK_MONOTONIC_COARSE in ns: the same clock at tick resolution (a few ms), and
   cheaper to read.  Only slow mode's recheck deadline uses it. */
static inline int64_t
ft_coarse_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * FT_NS_PER_S + ts.tv_nsec;
}

/* ------------------------------------------------------------------ 3.12 superinstructions */

#if FT_PY312
/* superinstructions.c: form code's superinstructions again; how many it formed. */
Py_ssize_t ft_superinstructions_reform(const fasttrace_state *st, PyCodeObject *code);
#endif

/* Called when PY_START answers DISABLE: how many superinstructions it formed again (0
   when the code was left alone, and always 0 on 3.13+).  The check is inline; only
   the walk over the code's instructions is a call. */
static inline Py_ssize_t
ft_reform_superinstructions(const fasttrace_state *st, PyCodeObject *code)
{
#if FT_PY312
    return st->reform_ready ? ft_superinstructions_reform(st, code) : 0;
#else
    /* 3.13 makes superinstructions in the compiler, and instrumentation keeps them. */
    (void)st;
    (void)code;
    return 0;
#endif
}

#endif /* FASTTRACE_H */

/* _fasttrace: C trampolines in front of pydevd's sys.monitoring callbacks, and a
   per-code breakpoint-line cache kept in the code object's co_extra slot.

   pydevd (debugpy) registers its PY_START / LINE / JUMP callbacks for tool 0.
   python/fastattach/_gate.py wraps each of them in a Trampoline.  While nobody is
   stepping or suspended, a trampoline answers "no breakpoint here" with
   sys.monitoring.DISABLE without entering pydevd, and filters condition-only
   breakpoints whose precompiled condition is false.  Everything else is forwarded
   to pydevd's callback by vectorcall, which pushes no Python frame, so pydevd's
   sys._getframe() still sees the user's frame.

   Python decides (which lines of a code object carry breakpoints, compiled
   conditions, whether anyone is stepping); C caches the decision.  Setup and
   teardown of sys.monitoring live in _gate.py. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CODE_EXTRA_INDEX_KEY "fastattach._fasttrace.code_extra_index"

/* How often, while in slow mode, we ask Python whether anyone still steps or is
   suspended.  Slow mode forwards everything to pydevd, which is correct but costly,
   so the bound is what a stray "continue" costs at most. */
#define SLOW_RECHECK_NS (5 * 1000 * 1000)

enum ft_kind { FT_PY_START = 0, FT_LINE = 1, FT_JUMP = 2 };

typedef struct {
    PyTypeObject *tracer_type;      /* owned */
    PyTypeObject *trampoline_type;  /* owned */
    PyTypeObject *budget_type;      /* owned */
    uint64_t last_generation;       /* shared by every Tracer, so a new tracer never
                                       matches a table cached by an old one */
    Py_ssize_t extra_index;         /* code-extra slot: one per interpreter, never released */
    /* 3.12 only, set by set_superinstruction_table(); see ft_reform_superinstructions. */
    int reform_ready;
    uint8_t reform_caches[256];     /* inline cache entries per opcode; FT_UNTOUCHABLE: leave the code */
    uint8_t reform_bases[256];      /* the base opcode of each specialized or instrumented one */
    uint8_t reform_ops[8];          /* see FT_REFORM_OPS */
} fasttrace_state;

#define FT_UNTOUCHABLE 255
/* The order of set_superinstruction_table()'s third argument. */
enum { FT_LOAD_FAST, FT_LOAD_CONST, FT_STORE_FAST, FT_LOAD_FAST__LOAD_FAST, FT_LOAD_FAST__LOAD_CONST,
       FT_STORE_FAST__LOAD_FAST, FT_STORE_FAST__STORE_FAST, FT_LOAD_CONST__LOAD_FAST, FT_REFORM_OPS };

static inline fasttrace_state *
get_fasttrace_state(PyObject *module)
{
    return (fasttrace_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------ per-code cache */

typedef struct BudgetObject BudgetObject;

typedef struct {
    int line;
    PyObject *condition;   /* owned: compiled condition of a condition-only breakpoint, or NULL */
    BudgetObject *budget;  /* owned: the breakpoint's budget (see "Budget" below), or NULL */
} ft_bpline;

typedef struct {
    uint64_t generation;   /* tracer generation the table was computed for; 0 = never */
    uint64_t tool0_line_tracer;  /* id of the Tracer whose pydevd has LINE enabled locally on
                                    this code; a later pydevd starts with none armed */
    int function_bp;       /* a function breakpoint names this code */
    Py_ssize_t n_lines;
    ft_bpline *lines;      /* owned, sorted by line; NULL when n_lines == 0 */
} ft_codeinfo;

static void
ft_codeinfo_clear_lines(ft_codeinfo *info)
{
    for (Py_ssize_t i = 0; i < info->n_lines; i++) {
        Py_CLEAR(info->lines[i].condition);
        Py_CLEAR(info->lines[i].budget);
    }
    PyMem_Free(info->lines);
    info->lines = NULL;
    info->n_lines = 0;
}

/* The freefunc of our co_extra slot: runs when the code object is deallocated. */
static void
ft_codeinfo_free(void *ptr)
{
    ft_codeinfo *info = (ft_codeinfo *)ptr;
    if (info != NULL) {
        ft_codeinfo_clear_lines(info);
        PyMem_Free(info);
    }
}

static Py_ssize_t
ft_code_extra_index(void)
{
    /* Kept in the interpreter dict so a re-import reuses the slot instead of using up
       another of the fixed MAX_CO_EXTRA_USERS (Modules/_testcapi/code.c does the same). */
    PyObject *interp_dict = PyInterpreterState_GetDict(PyInterpreterState_Get());
    if (interp_dict == NULL) {
        return -1;
    }
    PyObject *key = PyUnicode_FromString(CODE_EXTRA_INDEX_KEY);
    if (key == NULL) {
        return -1;
    }
    PyObject *saved = PyDict_GetItemWithError(interp_dict, key);   /* borrowed */
    Py_DECREF(key);
    if (saved != NULL) {
        return PyLong_AsSsize_t(saved);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t index = PyUnstable_Eval_RequestCodeExtraIndex(ft_codeinfo_free);
    if (index < 0) {
        /* It returns -1 without an exception when the slots run out (Python/ceval.c). */
        PyErr_SetString(PyExc_RuntimeError, "no free code-extra slot for fastattach");
        return -1;
    }
    PyObject *value = PyLong_FromSsize_t(index);
    if (value == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(interp_dict, CODE_EXTRA_INDEX_KEY, value);
    Py_DECREF(value);
    return rc < 0 ? -1 : index;
}

/* Borrowed: owned by the code object.  NULL with an exception set on failure. */
static ft_codeinfo *
ft_codeinfo_get(PyObject *code, Py_ssize_t extra_index)
{
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, extra_index, &extra) < 0) {
        return NULL;
    }
    if (extra != NULL) {
        return (ft_codeinfo *)extra;
    }
    ft_codeinfo *info = PyMem_Calloc(1, sizeof(ft_codeinfo));
    if (info == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    /* Set once per code object and never replaced, so the slot has exactly one owner. */
    if (PyUnstable_Code_SetExtra(code, extra_index, info) < 0) {
        PyMem_Free(info);
        return NULL;
    }
    return info;
}

/* The table in code's co_extra slot, without making one: 0 with *info set (NULL when no
   event of this code reached the filter), -1 with an exception set. */
static int
ft_codeinfo_peek(PyObject *code, Py_ssize_t extra_index, const char *caller, ft_codeinfo **info)
{
    if (!PyCode_Check(code)) {
        PyErr_Format(PyExc_TypeError, "%s() takes a code object", caller);
        return -1;
    }
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, extra_index, &extra) < 0) {
        return -1;
    }
    *info = (ft_codeinfo *)extra;
    return 0;
}

static const ft_bpline *
ft_codeinfo_find(const ft_codeinfo *info, long line)
{
    Py_ssize_t lo = 0, hi = info->n_lines;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (info->lines[mid].line < line) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return (lo < info->n_lines && info->lines[lo].line == line) ? &info->lines[lo] : NULL;
}

static int
ft_compare_bpline(const void *a, const void *b)
{
    int la = ((const ft_bpline *)a)->line, lb = ((const ft_bpline *)b)->line;
    return (la > lb) - (la < lb);
}

/* Fill info from compute(code)'s answer: None, or (function_bp, ((line, condition|None[, budget|None]), ...)). */
static int
ft_codeinfo_load(ft_codeinfo *info, PyObject *answer, PyTypeObject *budget_type)
{
    ft_codeinfo_clear_lines(info);
    info->function_bp = 0;
    if (answer == Py_None) {
        return 0;
    }
    if (!PyTuple_Check(answer) || PyTuple_GET_SIZE(answer) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(answer, 1))) {
        PyErr_SetString(PyExc_TypeError, "compute(code) must return None or (function_bp, ((line, condition), ...))");
        return -1;
    }
    int function_bp = PyObject_IsTrue(PyTuple_GET_ITEM(answer, 0));
    if (function_bp < 0) {
        return -1;
    }
    PyObject *entries = PyTuple_GET_ITEM(answer, 1);
    Py_ssize_t n = PyTuple_GET_SIZE(entries);
    ft_bpline *lines = NULL;
    if (n > 0) {
        lines = PyMem_Calloc((size_t)n, sizeof(ft_bpline));
        if (lines == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyTuple_GET_ITEM(entries, i);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 2 || PyTuple_GET_SIZE(entry) > 3) {
            PyErr_SetString(PyExc_TypeError, "breakpoint entries must be (line, condition[, budget]) tuples");
            goto error;
        }
        long line = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
        if (line == -1 && PyErr_Occurred()) {
            goto error;
        }
        PyObject *condition = PyTuple_GET_ITEM(entry, 1);
        if (condition != Py_None && !PyCode_Check(condition)) {
            PyErr_SetString(PyExc_TypeError, "a breakpoint condition must be a code object or None");
            goto error;
        }
        PyObject *budget = PyTuple_GET_SIZE(entry) == 3 ? PyTuple_GET_ITEM(entry, 2) : Py_None;
        if (budget != Py_None && !PyObject_TypeCheck(budget, budget_type)) {
            PyErr_SetString(PyExc_TypeError, "a breakpoint budget must be a _fasttrace.Budget or None");
            goto error;
        }
        lines[i].line = (int)line;
        lines[i].condition = condition == Py_None ? NULL : Py_NewRef(condition);
        lines[i].budget = budget == Py_None ? NULL : (BudgetObject *)Py_NewRef(budget);
    }
    if (n > 1) {
        qsort(lines, (size_t)n, sizeof(ft_bpline), ft_compare_bpline);
    }
    info->lines = lines;
    info->n_lines = n;
    info->function_bp = function_bp;
    return 0;
error:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(lines[i].condition);
        Py_XDECREF(lines[i].budget);
    }
    PyMem_Free(lines);
    return -1;
}


/* ------------------------------------------------------------------ Budget */

/* A breakpoint's budget: token buckets for condition evaluations, probe outputs
   (logpoint messages, snapshots), output bytes, and the time the hits cost,
   measured against the wall clock.  Python creates one per breakpoint and keeps it
   across table reloads; each ft_bpline entry owns one reference.  The hit path only
   reads the clock and does arithmetic: no allocation, no Python call, until a
   budget trips.  A paused budget makes its line answer DISABLE, so it then costs
   what any other disabled line costs; Python resumes it (and calls
   sys.monitoring.restart_events() to re-arm the line) after a cool-down. */

#define NS_PER_S 1000000000.0

enum ft_reason { BR_NONE = 0, BR_EVALUATIONS, BR_OUTPUTS, BR_BYTES, BR_TIME, BR_EXTERNAL, BR_COUNT };

static const char *const ft_reason_names[BR_COUNT] = {
    "none", "evaluations", "outputs", "bytes", "time", "external",
};

struct BudgetObject {
    PyObject_HEAD
    PyObject *spec;            /* owned: Python's description of the breakpoint, passed to the probe */
    /* Limits, 0 = unlimited.  Each bucket holds one second's worth (count buckets at least 1). */
    double eval_rate;          /* condition / hit-condition evaluations per second */
    double output_rate;        /* probe outputs (log messages, snapshots) per second */
    double byte_rate;          /* probe output bytes per second */
    double time_fraction;      /* time spent on hits per wall time: 0.01 = 1% of one core */
    int counts_evaluations;    /* the breakpoint has a condition or a hit condition */
    int probe;                 /* hits go to the tracer's probe, never to pydevd */
    /* State, changed only with the GIL held. */
    double eval_tokens, output_tokens, byte_tokens, time_tokens;   /* time_tokens in ns */
    int64_t refilled_at;       /* CLOCK_MONOTONIC ns, like time.monotonic_ns() */
    int64_t first_hit_at;      /* first hit since creation or the last resume */
    int64_t paused_at;
    int paused;
    int reason;
    unsigned long long hits, evaluations, outputs, bytes, time_ns, trips, paused_hits, dropped, probe_errors;
};

static int64_t
ft_precise_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline double
ft_min(double a, double b)
{
    return a < b ? a : b;
}

static inline double
ft_count_capacity(double rate)
{
    return rate < 1.0 ? 1.0 : rate;
}

static void
ft_budget_fill(BudgetObject *b, int64_t now)
{
    b->eval_tokens = ft_count_capacity(b->eval_rate);
    b->output_tokens = ft_count_capacity(b->output_rate);
    b->byte_tokens = b->byte_rate;
    b->time_tokens = b->time_fraction * NS_PER_S;
    b->refilled_at = now;
}

static void
ft_budget_refill(BudgetObject *b, int64_t now)
{
    int64_t elapsed = now - b->refilled_at;
    if (elapsed <= 0) {
        return;
    }
    double seconds = (double)elapsed / NS_PER_S;
    b->refilled_at = now;
    b->eval_tokens = ft_min(ft_count_capacity(b->eval_rate), b->eval_tokens + b->eval_rate * seconds);
    b->output_tokens = ft_min(ft_count_capacity(b->output_rate), b->output_tokens + b->output_rate * seconds);
    b->byte_tokens = ft_min(b->byte_rate, b->byte_tokens + b->byte_rate * seconds);
    b->time_tokens = ft_min(b->time_fraction * NS_PER_S, b->time_tokens + b->time_fraction * (double)elapsed);
}

/* Mark b paused; 1 if this call paused it (the caller then reports it). */
static int
ft_budget_pause(BudgetObject *b, int reason, int64_t now)
{
    if (b->paused) {
        return 0;
    }
    b->paused = 1;
    b->reason = reason;
    b->paused_at = now;
    b->trips++;
    return 1;
}

/* Charge cost_ns of time spent on a hit; 1 if that paused the budget. */
static int
ft_budget_charge_time(BudgetObject *b, int64_t cost_ns, int64_t now)
{
    if (cost_ns < 0) {
        cost_ns = 0;
    }
    b->time_ns += (unsigned long long)cost_ns;
    if (b->time_fraction <= 0) {
        return 0;
    }
    ft_budget_refill(b, now);
    b->time_tokens -= (double)cost_ns;
    return b->time_tokens < 0 && ft_budget_pause(b, BR_TIME, now);
}

/* ------------------------------------------------------------------ Tracer */

enum ft_stat {
    ST_LINE_DISABLE, ST_LINE_FORWARD, ST_CONDITION_FALSE, ST_CONDITION_FORWARD,
    ST_START_DISABLE, ST_START_FORWARD, ST_JUMP_DISABLE, ST_JUMP_FORWARD,
    ST_SLOW_FORWARD, ST_COMPUTE, ST_SLOW_CHECKS, ST_ERRORS,
    ST_BUDGET_PAUSED, ST_BUDGET_DROPPED, ST_PROBE, ST_TRIPS, ST_SUPERINSTRUCTIONS, ST_COUNT
};

static const char *const ft_stat_names[ST_COUNT] = {
    "line_disable", "line_forward", "condition_false", "condition_forward",
    "start_disable", "start_forward", "jump_disable", "jump_forward",
    "slow_forward", "compute", "slow_checks", "errors",
    "budget_paused", "budget_dropped", "probe", "trips", "superinstructions_formed",
};

typedef struct {
    PyObject_HEAD
    /* Owned references, cleared in Tracer_clear. */
    PyObject *disable;        /* sys.monitoring.DISABLE */
    PyObject *compute;        /* compute(code) -> None | (function_bp, ((line, cond), ...)) */
    PyObject *need_slow;      /* need_slow() -> bool: is any thread stepping or suspended? */
    PyObject *pending_error;  /* first exception a callback swallowed, for take_error() */
    PyObject *probe;          /* probe(spec) -> bytes output or -1, for budgets with probe=True; or NULL */
    PyObject *on_trip;        /* on_trip(budget): a budget just paused itself on the hit path; or NULL */
    /* Plain state. */
    fasttrace_state *state;   /* borrowed: the module outlives its types' instances */
    Py_ssize_t extra_index;
    uint64_t id;              /* unique among Tracers: stamps per-code state they own */
    uint64_t generation;
    int slow;                 /* forward every event to pydevd */
    uint64_t slow_epoch;      /* bumped by enter_slow, so a recheck racing with it loses */
    int64_t slow_recheck_at;  /* monotonic ns */
    int closed;               /* after close(): forward everything, touch no cache */
    unsigned long long stats[ST_COUNT];
} TracerObject;

typedef struct {
    PyObject_HEAD
    TracerObject *tracer;     /* owned */
    PyObject *target;         /* owned: pydevd's callback */
    int kind;
    vectorcallfunc vectorcall;
} TrampolineObject;

static int64_t
ft_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Swallow the current exception: keep the first for take_error(), count the rest.
   A monitoring callback must never raise: the exception would surface in the user's frame. */
static void
ft_record_error(TracerObject *self)
{
    self->stats[ST_ERRORS]++;
    PyObject *exc = PyErr_GetRaisedException();
    if (self->pending_error == NULL) {
        self->pending_error = exc;
    }
    else {
        Py_XDECREF(exc);
    }
}

/* 1 while pydevd must see every event, 0 otherwise.  Never raises. */
static int
ft_is_slow(TracerObject *self)
{
    if (!self->slow) {
        return 0;
    }
    int64_t now = ft_monotonic_ns();
    if (now < self->slow_recheck_at) {
        return 1;
    }
    self->slow_recheck_at = now + SLOW_RECHECK_NS;
    self->stats[ST_SLOW_CHECKS]++;
    uint64_t epoch = self->slow_epoch;
    PyObject *answer = PyObject_CallNoArgs(self->need_slow);
    int slow = answer == NULL ? -1 : PyObject_IsTrue(answer);
    Py_XDECREF(answer);
    if (slow < 0) {
        ft_record_error(self);
        return 1;
    }
    if (!slow && epoch == self->slow_epoch) {
        self->slow = 0;
    }
    return slow;
}

/* Borrowed table for code, recomputed when breakpoints changed.  NULL on failure,
   with the error already recorded: the caller forwards to pydevd, which is always safe. */
static ft_codeinfo *
ft_lookup(TracerObject *self, PyObject *code)
{
    ft_codeinfo *info = ft_codeinfo_get(code, self->extra_index);
    if (info == NULL) {
        ft_record_error(self);
        return NULL;
    }
    if (info->generation == self->generation) {
        return info;
    }
    self->stats[ST_COMPUTE]++;
    PyObject *answer = PyObject_CallOneArg(self->compute, code);
    if (answer == NULL) {
        ft_record_error(self);
        return NULL;
    }
    int rc = ft_codeinfo_load(info, answer, self->state->budget_type);
    Py_DECREF(answer);
    if (rc < 0) {
        ft_record_error(self);
        return NULL;
    }
    info->generation = self->generation;
    return info;
}

/* 1 true, 0 false, -1 could not tell (it raised): pydevd then evaluates it and reports. */
static int
ft_condition_holds(PyObject *condition)
{
    PyObject *saved = PyErr_GetRaisedException();
    int result = -1;
    PyFrameObject *frame = PyEval_GetFrame();   /* borrowed: the user's frame */
    if (frame != NULL) {
        PyObject *globals = PyFrame_GetGlobals(frame);
        PyObject *locals = PyFrame_GetLocals(frame);
        if (globals != NULL && locals != NULL) {
            PyObject *value = PyEval_EvalCode(condition, globals, locals);
            if (value != NULL) {
                result = PyObject_IsTrue(value);
                Py_DECREF(value);
            }
        }
        Py_XDECREF(globals);
        Py_XDECREF(locals);
    }
    if (result < 0) {
        PyErr_Clear();
        result = -1;
    }
    PyErr_SetRaisedException(saved);
    return result;
}

/* ------------------------------------------------------------------ 3.12 superinstructions */

/* CPython 3.12's _Py_Instrument rewrites every superinstruction of a code object to its
   first half when it inserts any event there, and only code creation makes them.  So
   every code object that runs under pydevd's global PY_START loses them for as long as
   it lives: 1-2% more instructions on pyperformance workloads
   (benchmarks/results/issue2-instructions.md).  When PY_START answers DISABLE, nothing
   of ours stays in the code, so the pairs are formed again here, exactly as
   _PyCode_Quicken forms them.

   Safe because: the code is left alone if anything but RESUME is instrumented (a line
   event, say, must see both halves); the second half of a pair is never changed, so a
   frame of another thread paused between the two runs on correctly; and the next time
   CPython instruments this code it undoes them first, as it did before. */
#if PY_VERSION_HEX < 0x030D0000
static uint8_t
ft_superinstruction(const fasttrace_state *st, int first, int second)
{
    const uint8_t *op = st->reform_ops;
    if (first == op[FT_LOAD_FAST] && second == op[FT_LOAD_FAST]) {
        return op[FT_LOAD_FAST__LOAD_FAST];
    }
    if (first == op[FT_LOAD_FAST] && second == op[FT_LOAD_CONST]) {
        return op[FT_LOAD_FAST__LOAD_CONST];
    }
    if (first == op[FT_STORE_FAST] && second == op[FT_LOAD_FAST]) {
        return op[FT_STORE_FAST__LOAD_FAST];
    }
    if (first == op[FT_STORE_FAST] && second == op[FT_STORE_FAST]) {
        return op[FT_STORE_FAST__STORE_FAST];
    }
    if (first == op[FT_LOAD_CONST] && second == op[FT_LOAD_FAST]) {
        return op[FT_LOAD_CONST__LOAD_FAST];
    }
    return 0;
}
#endif

/* Returns how many superinstructions it formed; 0 when the code was left alone. */
static Py_ssize_t
ft_reform_superinstructions(const fasttrace_state *st, PyCodeObject *code)
{
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13 makes superinstructions in the compiler, and instrumentation keeps them. */
    (void)st;
    (void)code;
    return 0;
#else
    if (!st->reform_ready) {
        return 0;
    }
    _Py_CODEUNIT *instructions = (_Py_CODEUNIT *)code->co_code_adaptive;
    Py_ssize_t length = Py_SIZE(code);
    for (Py_ssize_t i = 0; i < length; i++) {
        uint8_t caches = st->reform_caches[instructions[i].op.code];
        if (caches == FT_UNTOUCHABLE) {
            return 0;
        }
        i += caches;
    }
    Py_ssize_t formed = 0;
    int current = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        int previous = current;
        uint8_t opcode = instructions[i].op.code;
        current = st->reform_bases[opcode];
        uint8_t caches = st->reform_caches[opcode];
        if (caches) {
            current = 0;   /* an instruction with caches pairs with nothing */
            i += caches;
            continue;
        }
        uint8_t pair = ft_superinstruction(st, previous, current);
        if (pair && instructions[i - 1].op.code != pair) {
            instructions[i - 1].op.code = pair;
            formed++;
        }
    }
    return formed;
#endif
}

/* ------------------------------------------------------------------ Trampoline */

static PyObject *
ft_forward(TrampolineObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *result = PyObject_Vectorcall(self->target, args, nargsf, kwnames);
    if (result == NULL) {
        ft_record_error(self->tracer);
        Py_RETURN_NONE;
    }
    return result;
}

static PyObject *
ft_on_py_start(TrampolineObject *self, TracerObject *tracer, ft_codeinfo *info,
               PyObject *const *args, size_t nargsf)
{
    /* pydevd's PY_START only arms LINE for breakpoint code and checks function
       breakpoints; both are decided here from the cached table. */
    if (info->function_bp || (info->n_lines > 0 && info->tool0_line_tracer != tracer->id)) {
        tracer->stats[ST_START_FORWARD]++;
        return ft_forward(self, args, nargsf, NULL);
    }
    tracer->stats[ST_START_DISABLE]++;
    tracer->stats[ST_SUPERINSTRUCTIONS] += ft_reform_superinstructions(tracer->state, (PyCodeObject *)args[0]);
    return Py_NewRef(tracer->disable);
}

/* Tell Python a budget paused itself.  Never raises. */
static void
ft_report_trip(TracerObject *tracer, BudgetObject *b)
{
    tracer->stats[ST_TRIPS]++;
    if (tracer->on_trip == NULL) {
        return;
    }
    PyObject *saved = PyErr_GetRaisedException();
    PyObject *answer = PyObject_CallOneArg(tracer->on_trip, (PyObject *)b);
    if (answer == NULL) {
        ft_record_error(tracer);
    }
    Py_XDECREF(answer);
    PyErr_SetRaisedException(saved);
}

/* A hit on a line whose breakpoint has a budget (a LINE event, or a backward JUMP onto it). */
static PyObject *
ft_on_budgeted_hit(TrampolineObject *self, TracerObject *tracer, const ft_bpline *bp,
                   PyObject *const *args, size_t nargsf)
{
    BudgetObject *b = bp->budget;
    if (b->paused) {
        b->paused_hits++;
        b->dropped++;
        tracer->stats[ST_BUDGET_PAUSED]++;
        return Py_NewRef(tracer->disable);
    }
    /* Own both from here on: while Python code runs below, another thread may reload
       the table that bp points into. */
    Py_INCREF(b);
    PyObject *condition = Py_XNewRef(bp->condition);
    PyObject *result = NULL;
    int tripped = 0;
    int64_t now = ft_precise_ns();
    if (b->first_hit_at == 0) {
        b->first_hit_at = now;
    }
    b->hits++;
    ft_budget_refill(b, now);
    if (b->counts_evaluations) {
        if (b->eval_rate > 0 && b->eval_tokens < 1.0) {
            tripped = ft_budget_pause(b, BR_EVALUATIONS, now);
            goto dropped;
        }
        b->eval_tokens -= 1.0;
        b->evaluations++;
    }
    if (b->probe && b->output_rate > 0 && b->output_tokens < 1.0) {
        tripped = ft_budget_pause(b, BR_OUTPUTS, now);
        goto dropped;
    }
    if (condition != NULL) {
        int holds = ft_condition_holds(condition);
        int64_t after = ft_precise_ns();
        tripped = ft_budget_charge_time(b, after - now, after);
        now = after;
        if (holds == 0) {
            tracer->stats[ST_CONDITION_FALSE]++;
            result = b->paused ? Py_NewRef(tracer->disable) : Py_NewRef(Py_None);
            goto done;
        }
    }
    if (b->probe) {
        /* The probe does what pydevd would (message, snapshot), but never suspends. */
        tracer->stats[ST_PROBE]++;
        PyObject *answer = tracer->probe != NULL ? PyObject_CallOneArg(tracer->probe, b->spec) : Py_NewRef(Py_None);
        if (answer == NULL) {
            b->probe_errors++;
            ft_record_error(tracer);
        }
        else {
            long long n = PyLong_Check(answer) ? PyLong_AsLongLong(answer) : -1;
            if (n == -1 && PyErr_Occurred()) {
                b->probe_errors++;
                ft_record_error(tracer);
            }
            else if (n >= 0) {
                b->outputs++;
                b->bytes += (unsigned long long)n;
                b->output_tokens -= 1.0;
                if (b->byte_rate > 0) {
                    b->byte_tokens -= (double)n;
                    if (b->byte_tokens < 0) {
                        tripped |= ft_budget_pause(b, BR_BYTES, now);
                    }
                }
            }
            Py_DECREF(answer);
        }
        int64_t after = ft_precise_ns();
        tripped |= ft_budget_charge_time(b, after - now, after);
        result = b->paused ? Py_NewRef(tracer->disable) : Py_NewRef(Py_None);
        goto done;
    }
    /* pydevd evaluates what C could not and suspends; Python charges its time (Budget.charge). */
    if (self->kind == FT_LINE) {
        tracer->stats[condition != NULL ? ST_CONDITION_FORWARD : ST_LINE_FORWARD]++;
    }
    else {
        tracer->stats[ST_JUMP_FORWARD]++;
    }
    result = ft_forward(self, args, nargsf, NULL);
    goto done;
dropped:
    b->dropped++;
    tracer->stats[ST_BUDGET_DROPPED]++;
    result = Py_NewRef(tracer->disable);
done:
    if (tripped) {
        ft_report_trip(tracer, b);
    }
    Py_XDECREF(condition);
    Py_DECREF(b);
    return result;
}

static PyObject *
ft_on_line(TrampolineObject *self, TracerObject *tracer, ft_codeinfo *info,
           PyObject *const *args, size_t nargsf)
{
    long line = PyLong_AsLong(args[1]);
    if (line == -1 && PyErr_Occurred()) {
        ft_record_error(tracer);
        return ft_forward(self, args, nargsf, NULL);
    }
    const ft_bpline *bp = ft_codeinfo_find(info, line);
    if (bp == NULL) {
        tracer->stats[ST_LINE_DISABLE]++;
        return Py_NewRef(tracer->disable);
    }
    if (bp->budget != NULL) {
        return ft_on_budgeted_hit(self, tracer, bp, args, nargsf);
    }
    /* Owned: the condition may release the GIL, and another thread reload the table. */
    PyObject *condition = Py_XNewRef(bp->condition);
    if (condition != NULL && ft_condition_holds(condition) == 0) {
        /* Stay armed (None, not DISABLE): the condition may hold next time. */
        tracer->stats[ST_CONDITION_FALSE]++;
        Py_DECREF(condition);
        Py_RETURN_NONE;
    }
    tracer->stats[condition != NULL ? ST_CONDITION_FORWARD : ST_LINE_FORWARD]++;
    Py_XDECREF(condition);
    return ft_forward(self, args, nargsf, NULL);
}

static PyObject *
ft_on_jump(TrampolineObject *self, TracerObject *tracer, ft_codeinfo *info,
           PyObject *const *args, size_t nargsf)
{
    /* pydevd uses JUMP (3.12 only) to see a backward jump within one line, i.e. a
       one-line loop; only a backward jump onto a breakpoint line matters. */
    if (PyVectorcall_NARGS(nargsf) >= 3 && info->n_lines > 0) {
        long from_offset = PyLong_AsLong(args[1]);
        long to_offset = PyLong_AsLong(args[2]);
        if (PyErr_Occurred()) {
            ft_record_error(tracer);
            return ft_forward(self, args, nargsf, NULL);
        }
        int to_line = to_offset <= from_offset ? PyCode_Addr2Line((PyCodeObject *)args[0], (int)to_offset) : -1;
        const ft_bpline *bp = to_line >= 0 ? ft_codeinfo_find(info, to_line) : NULL;
        if (bp != NULL && bp->budget != NULL) {
            /* pydevd's rule: only a backward jump within one line is a hit (a LINE event
               reports the others). */
            if (PyCode_Addr2Line((PyCodeObject *)args[0], (int)from_offset) == to_line) {
                return ft_on_budgeted_hit(self, tracer, bp, args, nargsf);
            }
            bp = NULL;
        }
        if (bp != NULL) {
            tracer->stats[ST_JUMP_FORWARD]++;
            return ft_forward(self, args, nargsf, NULL);
        }
    }
    tracer->stats[ST_JUMP_DISABLE]++;
    return Py_NewRef(tracer->disable);
}

static PyObject *
Trampoline_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TrampolineObject *self = (TrampolineObject *)op;
    TracerObject *tracer = self->tracer;
    if (tracer->closed || kwnames != NULL || PyVectorcall_NARGS(nargsf) < 2 || !PyCode_Check(args[0])) {
        return ft_forward(self, args, nargsf, kwnames);
    }
    if (ft_is_slow(tracer)) {
        tracer->stats[ST_SLOW_FORWARD]++;
        return ft_forward(self, args, nargsf, NULL);
    }
    ft_codeinfo *info = ft_lookup(tracer, args[0]);
    if (info == NULL) {
        return ft_forward(self, args, nargsf, NULL);
    }
    switch (self->kind) {
    case FT_PY_START:
        return ft_on_py_start(self, tracer, info, args, nargsf);
    case FT_LINE:
        return ft_on_line(self, tracer, info, args, nargsf);
    default:
        return ft_on_jump(self, tracer, info, args, nargsf);
    }
}

static int
Trampoline_traverse(TrampolineObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->tracer);
    Py_VISIT(self->target);
    return 0;
}

static int
Trampoline_clear(TrampolineObject *self)
{
    Py_CLEAR(self->tracer);
    Py_CLEAR(self->target);
    return 0;
}

static void
Trampoline_dealloc(TrampolineObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Trampoline_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *
Trampoline_get_target(TrampolineObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->target);
}

static PyObject *
Trampoline_get_kind(TrampolineObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->kind);
}

static PyGetSetDef Trampoline_getset[] = {
    {"target", (getter)Trampoline_get_target, NULL, "pydevd's wrapped callback", NULL},
    {"kind", (getter)Trampoline_get_kind, NULL, "PY_START, LINE or JUMP (module constants)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Trampoline_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(TrampolineObject, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Trampoline_slots[] = {
    {Py_tp_doc, "A callback that filters events in C before pydevd's callback sees them."},
    {Py_tp_traverse, Trampoline_traverse},
    {Py_tp_clear, Trampoline_clear},
    {Py_tp_dealloc, Trampoline_dealloc},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_getset, Trampoline_getset},
    {Py_tp_members, Trampoline_members},
    {0, NULL},
};

static PyType_Spec Trampoline_spec = {
    .name = "fastattach._fasttrace.Trampoline",
    .basicsize = sizeof(TrampolineObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
             | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Trampoline_slots,
};

/* ------------------------------------------------------------------ Tracer methods */

static struct PyModuleDef fasttrace_module;

static int
Tracer_init(TracerObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"disable", "compute", "need_slow", NULL};
    PyObject *disable, *compute, *need_slow;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:Tracer", kwlist, &disable, &compute, &need_slow)) {
        return -1;
    }
    if (!PyCallable_Check(compute) || !PyCallable_Check(need_slow)) {
        PyErr_SetString(PyExc_TypeError, "compute and need_slow must be callable");
        return -1;
    }
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(self), &fasttrace_module);
    if (module == NULL) {
        return -1;
    }
    self->state = get_fasttrace_state(module);
    self->extra_index = self->state->extra_index;
    Py_XSETREF(self->disable, Py_NewRef(disable));
    Py_XSETREF(self->compute, Py_NewRef(compute));
    Py_XSETREF(self->need_slow, Py_NewRef(need_slow));
    self->id = ++self->state->last_generation;
    self->generation = ++self->state->last_generation;
    self->slow = 1;   /* until Python has looked at the threads once */
    return 0;
}

static int
Tracer_traverse(TracerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->disable);
    Py_VISIT(self->compute);
    Py_VISIT(self->need_slow);
    Py_VISIT(self->pending_error);
    Py_VISIT(self->probe);
    Py_VISIT(self->on_trip);
    return 0;
}

static int
Tracer_clear(TracerObject *self)
{
    Py_CLEAR(self->disable);
    Py_CLEAR(self->compute);
    Py_CLEAR(self->need_slow);
    Py_CLEAR(self->pending_error);
    Py_CLEAR(self->probe);
    Py_CLEAR(self->on_trip);
    return 0;
}

static void
Tracer_dealloc(TracerObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Tracer_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *
Tracer_trampoline(TracerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "trampoline(kind, target) takes 2 arguments");
        return NULL;
    }
    long kind = PyLong_AsLong(args[0]);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (kind < FT_PY_START || kind > FT_JUMP) {
        PyErr_Format(PyExc_ValueError, "unknown trampoline kind %ld", kind);
        return NULL;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "trampoline target must be callable");
        return NULL;
    }
    PyTypeObject *type = self->state->trampoline_type;
    TrampolineObject *tramp = PyObject_GC_New(TrampolineObject, type);
    if (tramp == NULL) {
        return NULL;
    }
    tramp->tracer = (TracerObject *)Py_NewRef(self);
    tramp->target = Py_NewRef(args[1]);
    tramp->kind = (int)kind;
    tramp->vectorcall = Trampoline_vectorcall;
    PyObject_GC_Track(tramp);
    return (PyObject *)tramp;
}

static PyObject *
Tracer_breakpoints_changed(TracerObject *self, PyObject *Py_UNUSED(ignored))
{
    self->generation = ++self->state->last_generation;
    Py_RETURN_NONE;
}

static PyObject *
Tracer_enter_slow(TracerObject *self, PyObject *Py_UNUSED(ignored))
{
    self->slow = 1;
    self->slow_epoch++;
    self->slow_recheck_at = 0;
    Py_RETURN_NONE;
}

static PyObject *
Tracer_note_local_events(TracerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyCode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "note_local_events(code, line_enabled)");
        return NULL;
    }
    int line_enabled = PyObject_IsTrue(args[1]);
    if (line_enabled < 0) {
        return NULL;
    }
    ft_codeinfo *info = ft_codeinfo_get(args[0], self->extra_index);
    if (info == NULL) {
        return NULL;
    }
    info->tool0_line_tracer = line_enabled ? self->id : 0;
    Py_RETURN_NONE;
}

static PyObject *
Tracer_cached_lines(TracerObject *self, PyObject *code)
{
    /* For tests: the cached breakpoint lines of code, or None if its table is stale or absent. */
    ft_codeinfo *info;
    if (ft_codeinfo_peek(code, self->extra_index, "cached_lines", &info) < 0) {
        return NULL;
    }
    if (info == NULL || info->generation != self->generation) {
        Py_RETURN_NONE;
    }
    PyObject *lines = PyTuple_New(info->n_lines);
    if (lines == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < info->n_lines; i++) {
        PyObject *line = PyLong_FromLong(info->lines[i].line);
        if (line == NULL) {
            Py_DECREF(lines);
            return NULL;
        }
        PyTuple_SET_ITEM(lines, i, line);
    }
    return lines;
}

static PyObject *
Tracer_stats(TracerObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *stats = PyDict_New();
    if (stats == NULL) {
        return NULL;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(self->stats[i]);
        if (value == NULL || PyDict_SetItemString(stats, ft_stat_names[i], value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(stats);
            return NULL;
        }
        Py_DECREF(value);
    }
    return stats;
}

static PyObject *
Tracer_set_hooks(TracerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_hooks(probe, on_trip) takes 2 arguments");
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (args[i] != Py_None && !PyCallable_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "set_hooks: probe and on_trip must be callable or None");
            return NULL;
        }
    }
    Py_XSETREF(self->probe, args[0] == Py_None ? NULL : Py_NewRef(args[0]));
    Py_XSETREF(self->on_trip, args[1] == Py_None ? NULL : Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyObject *
Tracer_take_error(TracerObject *self, PyObject *Py_UNUSED(ignored))
{
    /* The first exception a callback swallowed since the last call (or None). */
    PyObject *error = self->pending_error;
    self->pending_error = NULL;
    return error != NULL ? error : Py_NewRef(Py_None);
}

static PyObject *
Tracer_close(TracerObject *self, PyObject *Py_UNUSED(ignored))
{
    /* Trampolines pydevd still holds after teardown just forward. */
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *
Tracer_get_slow(TracerObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->slow);
}

static PyObject *
Tracer_get_generation(TracerObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->generation);
}

static PyMethodDef Tracer_methods[] = {
    {"trampoline", (PyCFunction)(void (*)(void))Tracer_trampoline, METH_FASTCALL,
     "trampoline(kind, target) -> a callback that filters events before target sees them"},
    {"breakpoints_changed", (PyCFunction)Tracer_breakpoints_changed, METH_NOARGS,
     "invalidate every cached per-code table (lazily: each is recomputed on its next event)"},
    {"enter_slow", (PyCFunction)Tracer_enter_slow, METH_NOARGS,
     "forward every event to pydevd until need_slow() says nobody steps or is suspended"},
    {"note_local_events", (PyCFunction)(void (*)(void))Tracer_note_local_events, METH_FASTCALL,
     "note_local_events(code, line_enabled): pydevd changed LINE on code"},
    {"cached_lines", (PyCFunction)Tracer_cached_lines, METH_O, "the cached breakpoint lines of code, or None"},
    {"stats", (PyCFunction)Tracer_stats, METH_NOARGS, "event counters"},
    {"set_hooks", (PyCFunction)(void (*)(void))Tracer_set_hooks, METH_FASTCALL,
     "set_hooks(probe, on_trip): probe(spec) serves hits of budgets made with probe=True and returns "
     "the bytes it output (or -1); on_trip(budget) hears of a budget pausing itself on the hit path"},
    {"take_error", (PyCFunction)Tracer_take_error, METH_NOARGS,
     "the first exception a callback swallowed since the last call, or None"},
    {"close", (PyCFunction)Tracer_close, METH_NOARGS, "make every trampoline a plain forwarder"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tracer_getset[] = {
    {"slow", (getter)Tracer_get_slow, NULL, "forwarding every event to pydevd", NULL},
    {"generation", (getter)Tracer_get_generation, NULL, "breakpoint generation of the cache", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tracer_slots[] = {
    {Py_tp_doc, "Tracer(disable, compute, need_slow): state shared by the trampolines of one pydevd."},
    {Py_tp_init, Tracer_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_traverse, Tracer_traverse},
    {Py_tp_clear, Tracer_clear},
    {Py_tp_dealloc, Tracer_dealloc},
    {Py_tp_methods, Tracer_methods},
    {Py_tp_getset, Tracer_getset},
    {0, NULL},
};

static PyType_Spec Tracer_spec = {
    .name = "fastattach._fasttrace.Tracer",
    .basicsize = sizeof(TracerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Tracer_slots,
};


/* ------------------------------------------------------------------ Budget methods */

static int
Budget_init(BudgetObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"spec", "eval_rate", "output_rate", "byte_rate", "time_fraction",
                             "counts_evaluations", "probe", NULL};
    PyObject *spec;
    double eval_rate = 0, output_rate = 0, byte_rate = 0, time_fraction = 0;
    int counts_evaluations = 0, probe = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$ddddpp:Budget", kwlist, &spec, &eval_rate, &output_rate,
                                     &byte_rate, &time_fraction, &counts_evaluations, &probe)) {
        return -1;
    }
    if (!(eval_rate >= 0) || !(output_rate >= 0) || !(byte_rate >= 0) || !(time_fraction >= 0)) {
        PyErr_SetString(PyExc_ValueError, "budget limits must be >= 0 (0 = unlimited)");
        return -1;
    }
    Py_XSETREF(self->spec, Py_NewRef(spec));
    self->eval_rate = eval_rate;
    self->output_rate = output_rate;
    self->byte_rate = byte_rate;
    self->time_fraction = time_fraction;
    self->counts_evaluations = counts_evaluations;
    self->probe = probe;
    ft_budget_fill(self, ft_precise_ns());
    return 0;
}

static int
Budget_traverse(BudgetObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->spec);
    return 0;
}

static int
Budget_clear(BudgetObject *self)
{
    Py_CLEAR(self->spec);
    return 0;
}

static void
Budget_dealloc(BudgetObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Budget_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *
Budget_resume(BudgetObject *self, PyObject *Py_UNUSED(ignored))
{
    /* Full buckets again.  The caller re-arms the DISABLEd line (restart_events). */
    int was_paused = self->paused;
    self->paused = 0;
    self->reason = BR_NONE;
    self->first_hit_at = 0;   /* the next hit starts a new episode */
    ft_budget_fill(self, ft_precise_ns());
    return PyBool_FromLong(was_paused);
}

static PyObject *
Budget_pause(BudgetObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(ft_budget_pause(self, BR_EXTERNAL, ft_precise_ns()));
}

static PyObject *
Budget_charge(BudgetObject *self, PyObject *arg)
{
    /* Time (ns) spent on a hit outside C, e.g. pydevd evaluating a hit condition.
       True if this charge paused the budget: the caller reports it. */
    long long cost = PyLong_AsLongLong(arg);
    if (cost == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyBool_FromLong(ft_budget_charge_time(self, cost, ft_precise_ns()));
}

#define BUDGET_STAT(name) {#name, offsetof(BudgetObject, name)}

static const struct { const char *name; size_t offset; } ft_budget_counters[] = {
    BUDGET_STAT(hits), BUDGET_STAT(evaluations), BUDGET_STAT(outputs), BUDGET_STAT(bytes),
    BUDGET_STAT(time_ns), BUDGET_STAT(trips), BUDGET_STAT(paused_hits), BUDGET_STAT(dropped),
    BUDGET_STAT(probe_errors),
};

static PyObject *
Budget_stats(BudgetObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *stats = PyDict_New();
    if (stats == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(ft_budget_counters) / sizeof(ft_budget_counters[0]); i++) {
        unsigned long long v = *(unsigned long long *)((char *)self + ft_budget_counters[i].offset);
        PyObject *value = PyLong_FromUnsignedLongLong(v);
        if (value == NULL || PyDict_SetItemString(stats, ft_budget_counters[i].name, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(stats);
            return NULL;
        }
        Py_DECREF(value);
    }
    return stats;
}

static PyObject *
Budget_get_spec(BudgetObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->spec != NULL ? self->spec : Py_None);
}

static PyObject *
Budget_get_paused(BudgetObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->paused);
}

static PyObject *
Budget_get_reason(BudgetObject *self, void *Py_UNUSED(closure))
{
    if (!self->paused) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(ft_reason_names[self->reason]);
}

static PyObject *
Budget_get_paused_at(BudgetObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->paused ? self->paused_at : 0);
}

static PyObject *
Budget_get_first_hit_at(BudgetObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->first_hit_at);
}

static PyObject *
Budget_get_limits(BudgetObject *self, void *Py_UNUSED(closure))
{
    return Py_BuildValue("{s:d,s:d,s:d,s:d,s:O,s:O}", "eval_rate", self->eval_rate, "output_rate",
                         self->output_rate, "byte_rate", self->byte_rate, "time_fraction", self->time_fraction,
                         "counts_evaluations", self->counts_evaluations ? Py_True : Py_False,
                         "probe", self->probe ? Py_True : Py_False);
}

static PyMethodDef Budget_methods[] = {
    {"resume", (PyCFunction)Budget_resume, METH_NOARGS, "unpause with full buckets; True if it was paused"},
    {"pause", (PyCFunction)Budget_pause, METH_NOARGS, "pause (reason 'external'); True if it was running"},
    {"charge", (PyCFunction)Budget_charge, METH_O, "charge(ns): time spent outside C; True if that paused it"},
    {"stats", (PyCFunction)Budget_stats, METH_NOARGS, "counters"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Budget_getset[] = {
    {"spec", (getter)Budget_get_spec, NULL, "what the probe is given", NULL},
    {"paused", (getter)Budget_get_paused, NULL, "the line answers DISABLE", NULL},
    {"reason", (getter)Budget_get_reason, NULL, "why it paused, or None", NULL},
    {"paused_at", (getter)Budget_get_paused_at, NULL, "time.monotonic_ns() when it paused, or 0", NULL},
    {"first_hit_at", (getter)Budget_get_first_hit_at, NULL, 
     "time.monotonic_ns() of the first hit since the last resume, or 0", NULL},
    {"limits", (getter)Budget_get_limits, NULL, "the limits it was made with", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Budget_slots[] = {
    {Py_tp_doc, "Budget(spec, *, eval_rate=0, output_rate=0, byte_rate=0, time_fraction=0, "
                "counts_evaluations=False, probe=False): one breakpoint's limits, checked in C on each hit."},
    {Py_tp_init, Budget_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_traverse, Budget_traverse},
    {Py_tp_clear, Budget_clear},
    {Py_tp_dealloc, Budget_dealloc},
    {Py_tp_methods, Budget_methods},
    {Py_tp_getset, Budget_getset},
    {0, NULL},
};

static PyType_Spec Budget_spec = {
    .name = "fastattach._fasttrace.Budget",
    .basicsize = sizeof(BudgetObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Budget_slots,
};

/* ------------------------------------------------------------------ module */

static PyObject *
fasttrace_seen_by_filter(PyObject *module, PyObject *code)
{
    ft_codeinfo *info;
    if (ft_codeinfo_peek(code, get_fasttrace_state(module)->extra_index, "seen_by_filter", &info) < 0) {
        return NULL;
    }
    return PyBool_FromLong(info != NULL);
}

static PyObject *
fasttrace_set_superinstruction_table(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer caches, bases, ops;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "set_superinstruction_table(caches, bases, ops)");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &caches, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &bases, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&caches);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &ops, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&caches);
        PyBuffer_Release(&bases);
        return NULL;
    }
    PyObject *result = NULL;
    fasttrace_state *st = get_fasttrace_state(module);
    if (caches.len != 256 || bases.len != 256 || ops.len != FT_REFORM_OPS) {
        PyErr_Format(PyExc_ValueError, "set_superinstruction_table: expected 256, 256 and %d bytes",
                     (int)FT_REFORM_OPS);
    }
    else {
        memcpy(st->reform_caches, caches.buf, 256);
        memcpy(st->reform_bases, bases.buf, 256);
        memcpy(st->reform_ops, ops.buf, FT_REFORM_OPS);
        st->reform_ready = 1;
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&caches);
    PyBuffer_Release(&bases);
    PyBuffer_Release(&ops);
    return result;
}

static PyObject *
fasttrace_reform_superinstructions(PyObject *module, PyObject *code)
{
    if (!PyCode_Check(code)) {
        PyErr_SetString(PyExc_TypeError, "reform_superinstructions() takes a code object");
        return NULL;
    }
    return PyLong_FromSsize_t(ft_reform_superinstructions(get_fasttrace_state(module), (PyCodeObject *)code));
}

static PyMethodDef fasttrace_methods[] = {
    {"set_superinstruction_table", (PyCFunction)(void (*)(void))fasttrace_set_superinstruction_table,
     METH_FASTCALL, "3.12: opcode tables for forming superinstructions again where PY_START answers DISABLE"},
    {"reform_superinstructions", (PyCFunction)fasttrace_reform_superinstructions, METH_O,
     "form code's superinstructions again if nothing but RESUME is instrumented; returns how many"},
    {"seen_by_filter", (PyCFunction)fasttrace_seen_by_filter, METH_O,
     "whether an event of this code object reached the filter (its code-extra slot holds a table), "
     "which means sys.monitoring instrumented it"},
    {NULL, NULL, 0, NULL},
};

static int
fasttrace_exec(PyObject *module)
{
    fasttrace_state *st = get_fasttrace_state(module);
    if ((st->extra_index = ft_code_extra_index()) < 0) {
        return -1;
    }
    st->tracer_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Tracer_spec, NULL);
    if (st->tracer_type == NULL || PyModule_AddType(module, st->tracer_type) < 0) {
        return -1;
    }
    st->trampoline_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Trampoline_spec, NULL);
    if (st->trampoline_type == NULL || PyModule_AddType(module, st->trampoline_type) < 0) {
        return -1;
    }
    st->budget_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Budget_spec, NULL);
    if (st->budget_type == NULL || PyModule_AddType(module, st->budget_type) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "PY_START", FT_PY_START) < 0
        || PyModule_AddIntConstant(module, "LINE", FT_LINE) < 0
        || PyModule_AddIntConstant(module, "JUMP", FT_JUMP) < 0) {
        return -1;
    }
    return 0;
}

static int
fasttrace_traverse(PyObject *module, visitproc visit, void *arg)
{
    fasttrace_state *st = get_fasttrace_state(module);
    Py_VISIT(st->tracer_type);
    Py_VISIT(st->trampoline_type);
    Py_VISIT(st->budget_type);
    return 0;
}

static int
fasttrace_clear(PyObject *module)
{
    fasttrace_state *st = get_fasttrace_state(module);
    Py_CLEAR(st->tracer_type);
    Py_CLEAR(st->trampoline_type);
    Py_CLEAR(st->budget_type);
    return 0;
}

static void
fasttrace_free(void *module)
{
    fasttrace_clear((PyObject *)module);
}

static PyModuleDef_Slot fasttrace_slots[] = {
    {Py_mod_exec, fasttrace_exec},
    /* gh-103092: the code-extra slot and generation counter are per process for now. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#ifdef Py_mod_gil  /* 3.13+: the cache relies on the GIL until it is made thread-safe */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fasttrace_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastattach._fasttrace",
    .m_doc = "C trampolines for pydevd's sys.monitoring callbacks, with a per-code breakpoint cache.",
    .m_size = sizeof(fasttrace_state),
    .m_methods = fasttrace_methods,
    .m_slots = fasttrace_slots,
    .m_traverse = fasttrace_traverse,
    .m_clear = fasttrace_clear,
    .m_free = fasttrace_free,
};

PyMODINIT_FUNC
PyInit__fasttrace(void)
{
    return PyModuleDef_Init(&fasttrace_module);
}

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
    uint64_t last_generation;       /* shared by every Tracer, so a new tracer never
                                       matches a table cached by an old one */
    Py_ssize_t extra_index;         /* code-extra slot: one per interpreter, never released */
} fasttrace_state;

static inline fasttrace_state *
get_fasttrace_state(PyObject *module)
{
    return (fasttrace_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------ per-code cache */

typedef struct {
    int line;
    PyObject *condition;   /* owned: compiled condition of a condition-only breakpoint, or NULL */
} ft_bpline;

typedef struct {
    uint64_t generation;   /* tracer generation the table was computed for; 0 = never */
    int tool0_line;        /* pydevd has LINE enabled locally on this code */
    int function_bp;       /* a function breakpoint names this code */
    Py_ssize_t n_lines;
    ft_bpline *lines;      /* owned, sorted by line; NULL when n_lines == 0 */
} ft_codeinfo;

static void
ft_codeinfo_clear_lines(ft_codeinfo *info)
{
    for (Py_ssize_t i = 0; i < info->n_lines; i++) {
        Py_CLEAR(info->lines[i].condition);
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

/* Fill info from compute(code)'s answer: None, or (function_bp, ((line, condition|None), ...)). */
static int
ft_codeinfo_load(ft_codeinfo *info, PyObject *answer)
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
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
            PyErr_SetString(PyExc_TypeError, "breakpoint entries must be (line, condition) tuples");
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
        lines[i].line = (int)line;
        lines[i].condition = condition == Py_None ? NULL : Py_NewRef(condition);
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
    }
    PyMem_Free(lines);
    return -1;
}

/* ------------------------------------------------------------------ Tracer */

enum ft_stat {
    ST_LINE_DISABLE, ST_LINE_FORWARD, ST_CONDITION_FALSE, ST_CONDITION_FORWARD,
    ST_START_DISABLE, ST_START_FORWARD, ST_JUMP_DISABLE, ST_JUMP_FORWARD,
    ST_SLOW_FORWARD, ST_COMPUTE, ST_SLOW_CHECKS, ST_ERRORS, ST_COUNT
};

static const char *const ft_stat_names[ST_COUNT] = {
    "line_disable", "line_forward", "condition_false", "condition_forward",
    "start_disable", "start_forward", "jump_disable", "jump_forward",
    "slow_forward", "compute", "slow_checks", "errors",
};

typedef struct {
    PyObject_HEAD
    /* Owned references, cleared in Tracer_clear. */
    PyObject *disable;        /* sys.monitoring.DISABLE */
    PyObject *compute;        /* compute(code) -> None | (function_bp, ((line, cond), ...)) */
    PyObject *need_slow;      /* need_slow() -> bool: is any thread stepping or suspended? */
    PyObject *pending_error;  /* first exception a callback swallowed, for take_error() */
    /* Plain state. */
    fasttrace_state *state;   /* borrowed: the module outlives its types' instances */
    Py_ssize_t extra_index;
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
    int rc = ft_codeinfo_load(info, answer);
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
    if (info->function_bp || (info->n_lines > 0 && !info->tool0_line)) {
        tracer->stats[ST_START_FORWARD]++;
        return ft_forward(self, args, nargsf, NULL);
    }
    tracer->stats[ST_START_DISABLE]++;
    return Py_NewRef(tracer->disable);
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
    if (bp->condition != NULL && ft_condition_holds(bp->condition) == 0) {
        /* Stay armed (None, not DISABLE): the condition may hold next time. */
        tracer->stats[ST_CONDITION_FALSE]++;
        Py_RETURN_NONE;
    }
    tracer->stats[bp->condition != NULL ? ST_CONDITION_FORWARD : ST_LINE_FORWARD]++;
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
        if (to_offset <= from_offset
            && ft_codeinfo_find(info, PyCode_Addr2Line((PyCodeObject *)args[0], (int)to_offset)) != NULL) {
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
    return 0;
}

static int
Tracer_clear(TracerObject *self)
{
    Py_CLEAR(self->disable);
    Py_CLEAR(self->compute);
    Py_CLEAR(self->need_slow);
    Py_CLEAR(self->pending_error);
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
    info->tool0_line = line_enabled;
    Py_RETURN_NONE;
}

static PyObject *
Tracer_cached_lines(TracerObject *self, PyObject *code)
{
    /* For tests: the cached breakpoint lines of code, or None if its table is stale or absent. */
    if (!PyCode_Check(code)) {
        PyErr_SetString(PyExc_TypeError, "cached_lines(code)");
        return NULL;
    }
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, self->extra_index, &extra) < 0) {
        return NULL;
    }
    ft_codeinfo *info = (ft_codeinfo *)extra;
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

/* ------------------------------------------------------------------ module */

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
    return 0;
}

static int
fasttrace_clear(PyObject *module)
{
    fasttrace_state *st = get_fasttrace_state(module);
    Py_CLEAR(st->tracer_type);
    Py_CLEAR(st->trampoline_type);
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

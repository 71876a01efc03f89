/* trampoline.c: the event path.  A Tracer is the state shared by the trampolines of
   one pydevd (its cache generation, slow mode, hooks, counters, the first error a
   callback swallowed); a Trampoline wraps one of pydevd's PY_START / LINE / JUMP
   callbacks and answers its events from the per-code table (codeinfo.h) and the
   breakpoint's budget (budget.h), or forwards them to pydevd by vectorcall.

   A sys.monitoring callback must never raise: an exception set here would surface
   in the user's frame.  Every failure is recorded (ft_record_error) and reported by
   Tracer.take_error(); the event is then forwarded, which is always safe. */
#include "budget.h"
#include "codeinfo.h"
#include "fasttrace.h"

/* How often, while in slow mode, we ask Python whether anyone still steps or is
   suspended.  Slow mode forwards everything to pydevd, which is correct but costly,
   so the bound is what a stray "continue" costs at most. */
#define SLOW_RECHECK_NS (5 * 1000 * 1000)

/* ------------------------------------------------------------------ Tracer and Trampoline */

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
    Py_ssize_t extra_index;   /* state->extra_index, copied so events need not look it up */
    uint64_t id;              /* unique among Tracers: stamps per-code state they own */
    uint64_t generation;      /* of the breakpoints; a table of another generation is stale */
    int slow;                 /* forward every event to pydevd */
    uint64_t slow_epoch;      /* bumped by enter_slow, so a recheck racing with it loses */
    int64_t slow_recheck_at;  /* ft_coarse_monotonic_ns() */
    int closed;               /* after close(): forward everything, touch no cache */
    unsigned long long stats[ST_COUNT];
} TracerObject;

typedef struct {
    PyObject_HEAD
    TracerObject *tracer;     /* owned */
    PyObject *target;         /* owned: pydevd's callback */
    int kind;                 /* enum ft_kind: which of pydevd's callbacks target is */
    vectorcallfunc vectorcall;   /* Trampoline_vectorcall (__vectorcalloffset__) */
} TrampolineObject;

/* ------------------------------------------------------------------ callbacks */

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

/* 1 when the raised exception is the program's to see, not ours to swallow: a
   KeyboardInterrupt or SystemExit (what SIGINT and the usual SIGTERM handlers raise, also
   while pydevd keeps the thread suspended inside its callback).  As under debugpy, it goes
   on to the user's frame. */
static int
ft_belongs_to_program(void)
{
    return PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) || PyErr_ExceptionMatches(PyExc_SystemExit);
}

/* 1 while pydevd must see every event, 0 otherwise.  Never raises. */
static int
ft_is_slow(TracerObject *self)
{
    if (!self->slow) {
        return 0;
    }
    int64_t now = ft_coarse_monotonic_ns();
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
    /* Owned for the call: the compiler is Python code, and may replace itself. */
    PyObject *compiler = Py_XNewRef(self->state->condition_compiler);
    int rc = ft_codeinfo_load(info, answer, self->state->budget_type, code, compiler);
    Py_XDECREF(compiler);
    Py_DECREF(answer);
    if (rc < 0) {
        ft_record_error(self);
        return NULL;
    }
    info->generation = self->generation;
    return info;
}

/* ft_fast_condition's answer when this frame needs the general path. */
#define FT_FAST_UNSUITED (-3)

/* One side of a comparison: borrowed, from args or the comparison's constants.  Its ints
   were checked by ft_codeinfo_load (ft_is_small_int). */
static inline PyObject *
ft_operand(PyObject *comparison, int side, PyObject *const *args)
{
    PyObject *operand = PyTuple_GET_ITEM(comparison, side + 1);
    if (ft_small_int_value(PyTuple_GET_ITEM(comparison, side)) == FT_OPERAND_CONSTANT) {
        return operand;
    }
    return args[ft_small_int_value(operand)];
}

/* The truth of a comparison (engine/conditions.py _comparison) of the variables in args:
   what COMPARE_OP, IS_OP and CONTAINS_OP compute, then bool() as the caller's IsTrue
   would.  1, 0, or -1 with an exception set. */
static int
ft_compare(PyObject *comparison, PyObject *const *args)
{
    int op = (int)ft_small_int_value(PyTuple_GET_ITEM(comparison, 0));
    PyObject *left = ft_operand(comparison, 1, args);
    PyObject *right = ft_operand(comparison, 3, args);
    int result;
    switch (op) {
    case FT_COMPARE_IS:
        return left == right;
    case FT_COMPARE_IS_NOT:
        return left != right;
    case FT_COMPARE_IN:
        return PySequence_Contains(right, left);
    case FT_COMPARE_NOT_IN:
        result = PySequence_Contains(right, left);
        return result < 0 ? -1 : !result;
    default: {
        PyObject *value = PyObject_RichCompare(left, right, op);
        if (value == NULL) {
            return -1;
        }
        result = PyObject_IsTrue(value);
        Py_DECREF(value);
        return result;
    }
    }
}

/* The condition computed by its function (engine/conditions.py) from the frame's
   variables: 1 true, 0 false, -1 it raised (the exception is set); FT_FAST_UNSUITED,
   with no exception, when only the general path is exact here: the frame runs with other
   globals than the function was made with, or a variable the condition reads is unbound
   (eval would then find the name in globals or builtins).  fast is a (function, names,
   comparison) triple that ft_codeinfo_load checked; the caller owns a reference to it. */
static int
ft_fast_condition(PyObject *fast, PyFrameObject *frame)
{
    PyObject *function = PyTuple_GET_ITEM(fast, 0);   /* borrowed: owned by fast */
    PyObject *names = PyTuple_GET_ITEM(fast, 1);      /* borrowed: owned by fast */
    PyObject *globals = PyFrame_GetGlobals(frame);
    int same_globals = globals == PyFunction_GET_GLOBALS(function);
    Py_DECREF(globals);
    if (!same_globals) {
        return FT_FAST_UNSUITED;
    }
    PyObject *args[FT_FAST_CONDITION_MAX_ARGS];   /* owned, the first n */
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++) {
        /* One variable by name, straight from the frame: no locals dict (3.12) or
           proxy (3.13+) is built. */
        args[i] = PyFrame_GetVar(frame, PyTuple_GET_ITEM(names, i));
        if (args[i] == NULL) {
            int unbound = PyErr_ExceptionMatches(PyExc_NameError);
            while (i-- > 0) {
                Py_DECREF(args[i]);
            }
            if (unbound) {
                PyErr_Clear();
                return FT_FAST_UNSUITED;
            }
            return -1;
        }
    }
    PyObject *comparison = PyTuple_GET_ITEM(fast, 2);   /* borrowed: owned by fast */
    int truth;
    if (comparison != Py_None) {
        truth = ft_compare(comparison, args);
    }
    else {
        PyObject *value = PyObject_Vectorcall(function, args, (size_t)n, NULL);
        truth = value == NULL ? -1 : PyObject_IsTrue(value);
        Py_XDECREF(value);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(args[i]);
    }
    return truth;
}

/* 1 true, 0 false, -1 could not tell (it raised): pydevd then evaluates it and reports.
   -2: a KeyboardInterrupt or SystemExit arrived meanwhile; it is set, for the program.
   fast (or NULL) is the condition's (function, names, comparison); both are owned by the
   caller. */
static int
ft_condition_holds(TracerObject *tracer, PyObject *condition, PyObject *fast)
{
    PyObject *saved = PyErr_GetRaisedException();
    int result = -1;
    PyFrameObject *frame = PyEval_GetFrame();   /* borrowed: the user's frame */
    if (frame != NULL && fast != NULL) {
        result = ft_fast_condition(fast, frame);
        if (result != FT_FAST_UNSUITED) {
            tracer->stats[ST_CONDITION_FAST]++;
            goto finish;
        }
        result = -1;
    }
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
finish:
    if (result < 0) {
        if (ft_belongs_to_program()) {
            Py_XDECREF(saved);
            return -2;
        }
        PyErr_Clear();
        result = -1;
    }
    PyErr_SetRaisedException(saved);
    return result;
}

/* ------------------------------------------------------------------ Trampoline */

/* pydevd's answer for this event: a new reference; NULL only with a KeyboardInterrupt or
   SystemExit set, for the program (see ft_belongs_to_program). */
static PyObject *
ft_forward(TrampolineObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *result = PyObject_Vectorcall(self->target, args, nargsf, kwnames);
    if (result == NULL) {
        if (ft_belongs_to_program()) {
            return NULL;
        }
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
    BudgetObject *b = bp->budget;   /* borrowed: owned by bp, until we own it below */
    if (b->paused) {
        ft_budget_count_paused_hit(b);
        tracer->stats[ST_BUDGET_PAUSED]++;
        return Py_NewRef(tracer->disable);
    }
    /* Own both from here on: while Python code runs below, another thread may reload
       the table that bp points into. */
    Py_INCREF(b);
    PyObject *condition = Py_XNewRef(bp->condition);
    PyObject *fast = Py_XNewRef(bp->fast);
    PyObject *result = NULL;   /* owned: what the callback returns */
    int tripped = 0;
    int64_t now = ft_monotonic_ns();
    if (!ft_budget_admit(b, now, &tripped)) {
        tracer->stats[ST_BUDGET_DROPPED]++;
        result = Py_NewRef(tracer->disable);
        goto done;
    }
    if (condition != NULL) {
        int holds = ft_condition_holds(tracer, condition, fast);
        int64_t after = ft_monotonic_ns();
        tripped = ft_budget_charge_time(b, after - now, after);
        now = after;
        if (holds == -2) {
            goto done;   /* result stays NULL: the program's exception is set */
        }
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
                tripped |= ft_budget_count_output(b, n, now);
            }
            Py_DECREF(answer);
        }
        int64_t after = ft_monotonic_ns();
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
done:
    if (tripped) {
        ft_report_trip(tracer, b);
    }
    Py_XDECREF(condition);
    Py_XDECREF(fast);
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
    PyObject *fast = Py_XNewRef(bp->fast);
    int holds = condition != NULL ? ft_condition_holds(tracer, condition, fast) : 1;
    Py_XDECREF(fast);
    if (holds == -2) {
        Py_DECREF(condition);
        return NULL;   /* the program's exception is set */
    }
    if (holds == 0) {
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
ft_dispatch(TrampolineObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
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

static PyObject *
Trampoline_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    /* CPython holds no reference to a callback while it runs, and pydevd re-registers its
       callbacks from inside them (a suspended thread waits inside its LINE callback): without
       this one, the registration that replaces us would free us under our own feet. */
    Py_INCREF(op);
    PyObject *result = ft_dispatch((TrampolineObject *)op, args, nargsf, kwnames);
    Py_DECREF(op);
    return result;
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

PyType_Spec Trampoline_spec = {
    .name = "fastattach._fasttrace.Trampoline",
    .basicsize = sizeof(TrampolineObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
             | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Trampoline_slots,
};

/* ------------------------------------------------------------------ Tracer methods */

static int
Tracer_init(TracerObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"disable", "compute", "need_slow", "probes", NULL};
    PyObject *disable, *compute, *need_slow;
    int probes = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|$p:Tracer", kwlist, &disable, &compute, &need_slow,
                                     &probes)) {
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
    /* The probes' Tracer keeps its tables in a slot of its own: a code object can carry a
       breakpoint and a probe, and each Tracer's table must survive the other's events. */
    self->extra_index = probes ? self->state->probe_extra_index : self->state->extra_index;
    Py_XSETREF(self->disable, Py_NewRef(disable));
    Py_XSETREF(self->compute, Py_NewRef(compute));
    Py_XSETREF(self->need_slow, Py_NewRef(need_slow));
    self->id = ++self->state->last_stamp;
    self->generation = ++self->state->last_stamp;
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
    self->generation = ++self->state->last_stamp;
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
Tracer_has_table(TracerObject *self, PyObject *code)
{
    /* Whether an event of code reached this Tracer (its slot holds a table), fresh or not. */
    ft_codeinfo *info;
    if (ft_codeinfo_peek(code, self->extra_index, "has_table", &info) < 0) {
        return NULL;
    }
    return PyBool_FromLong(info != NULL);
}

static const ft_counter ft_tracer_counters[] = {
#define FT_TRACER_COUNTER(NAME, name) {name, offsetof(TracerObject, stats) + ST_##NAME * sizeof(unsigned long long)},
    FT_TRACER_STATS(FT_TRACER_COUNTER)
#undef FT_TRACER_COUNTER
};

static PyObject *
Tracer_stats(TracerObject *self, PyObject *Py_UNUSED(ignored))
{
    return ft_counters_dict(self, ft_tracer_counters, FT_COUNT_OF(ft_tracer_counters));
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
    {"has_table", (PyCFunction)Tracer_has_table, METH_O,
     "whether an event of code reached this Tracer (its code-extra slot holds a table)"},
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
    {Py_tp_doc, "Tracer(disable, compute, need_slow, *, probes=False): state shared by the trampolines of one pydevd, "
     "or (probes=True, a code-extra slot of its own) of the always-on probes."},
    {Py_tp_init, Tracer_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_traverse, Tracer_traverse},
    {Py_tp_clear, Tracer_clear},
    {Py_tp_dealloc, Tracer_dealloc},
    {Py_tp_methods, Tracer_methods},
    {Py_tp_getset, Tracer_getset},
    {0, NULL},
};

PyType_Spec Tracer_spec = {
    .name = "fastattach._fasttrace.Tracer",
    .basicsize = sizeof(TracerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Tracer_slots,
};

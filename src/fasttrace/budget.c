/* budget.c: the Budget type: one breakpoint's limits, checked in C on each hit
   (budget.h has the buckets and the hit path). */
#include "budget.h"

static const char *const ft_reason_names[BR_COUNT] = {
#define FT_REASON_NAME(NAME, name) name,
    FT_BUDGET_REASONS(FT_REASON_NAME)
#undef FT_REASON_NAME
};

static const ft_counter ft_budget_counters[] = {
#define FT_BUDGET_COUNTER(name) {#name, offsetof(BudgetObject, name)},
    FT_BUDGET_COUNTERS(FT_BUDGET_COUNTER)
#undef FT_BUDGET_COUNTER
};

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
    ft_budget_fill(self, ft_monotonic_ns());
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
    ft_budget_fill(self, ft_monotonic_ns());
    return PyBool_FromLong(was_paused);
}

static PyObject *
Budget_pause(BudgetObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(ft_budget_pause(self, BR_EXTERNAL, ft_monotonic_ns()));
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
    return PyBool_FromLong(ft_budget_charge_time(self, cost, ft_monotonic_ns()));
}

static PyObject *
Budget_stats(BudgetObject *self, PyObject *Py_UNUSED(ignored))
{
    return ft_counters_dict(self, ft_budget_counters, FT_COUNT_OF(ft_budget_counters));
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

PyType_Spec Budget_spec = {
    .name = "fastattach._fasttrace.Budget",
    .basicsize = sizeof(BudgetObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Budget_slots,
};

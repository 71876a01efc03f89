/* module.c: the _fasttrace module: multi-phase init with its state in the module
   (Modules/_lsprof.c's shape), the module functions, and what the files share
   (ft_counters_dict).  The types live in trampoline.c and budget.c. */
#include "codeinfo.h"
#include "fasttrace.h"

PyObject *
ft_counters_dict(const void *object, const ft_counter *counters, size_t n)
{
    PyObject *stats = PyDict_New();   /* owned: returned */
    if (stats == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned long long v = *(const unsigned long long *)((const char *)object + counters[i].offset);
        PyObject *value = PyLong_FromUnsignedLongLong(v);
        if (value == NULL || PyDict_SetItemString(stats, counters[i].name, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(stats);
            return NULL;
        }
        Py_DECREF(value);
    }
    return stats;
}

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

static PyObject *
fasttrace_set_condition_compiler(PyObject *module, PyObject *compiler)
{
    if (compiler != Py_None && !PyCallable_Check(compiler)) {
        PyErr_SetString(PyExc_TypeError, "set_condition_compiler() takes a callable or None");
        return NULL;
    }
    fasttrace_state *st = get_fasttrace_state(module);
    Py_XSETREF(st->condition_compiler, compiler == Py_None ? NULL : Py_NewRef(compiler));
    Py_RETURN_NONE;
}

static PyMethodDef fasttrace_methods[] = {
    {"set_condition_compiler", (PyCFunction)fasttrace_set_condition_compiler, METH_O,
     "set_condition_compiler(compiler | None): compiler(condition, code, globals) -> (function, names, "
     "comparison) or None makes a condition a function of the frame's variables when a per-code table is loaded"},
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
#ifdef Py_GIL_DISABLED
    /* Refuse before anything else: the per-code cache, the Tracer's fields and the
       tool-id hand-off all rely on the GIL today (docs/free-threading.md). */
    (void)module;
    PyErr_SetString(PyExc_ImportError,
                    "fastattach does not support free-threaded CPython builds yet; see docs/free-threading.md");
    return -1;
#else
    fasttrace_state *st = get_fasttrace_state(module);
    if ((st->extra_index = ft_code_extra_index(FT_CODE_EXTRA_INDEX_KEY)) < 0
        || (st->probe_extra_index = ft_code_extra_index(FT_PROBE_CODE_EXTRA_INDEX_KEY)) < 0) {
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
#endif
}

static int
fasttrace_traverse(PyObject *module, visitproc visit, void *arg)
{
    fasttrace_state *st = get_fasttrace_state(module);
    Py_VISIT(st->tracer_type);
    Py_VISIT(st->trampoline_type);
    Py_VISIT(st->budget_type);
    Py_VISIT(st->condition_compiler);
    return 0;
}

static int
fasttrace_clear(PyObject *module)
{
    fasttrace_state *st = get_fasttrace_state(module);
    Py_CLEAR(st->tracer_type);
    Py_CLEAR(st->trampoline_type);
    Py_CLEAR(st->budget_type);
    Py_CLEAR(st->condition_compiler);
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
#ifdef Py_mod_gil  /* 3.13+ */
    /* The cache and the Tracer rely on the GIL until the work in docs/free-threading.md
       is done; Py_MOD_GIL_NOT_USED comes with it.  A free-threaded build reads this slot
       when it creates the module, before exec, so it may turn the GIL on (with a
       RuntimeWarning) before fasttrace_exec refuses the import. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

struct PyModuleDef fasttrace_module = {
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

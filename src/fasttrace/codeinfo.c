/* codeinfo.c: making, loading and freeing the per-code tables of codeinfo.h.
   Nothing here runs on the event path except a code object's first event
   (ft_codeinfo_new) and a table reload after breakpoints changed (ft_codeinfo_load). */
#include "codeinfo.h"

static void
ft_codeinfo_clear_lines(ft_codeinfo *info)
{
    for (Py_ssize_t i = 0; i < info->n_lines; i++) {
        Py_CLEAR(info->lines[i].condition);
        Py_CLEAR(info->lines[i].fast);
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

Py_ssize_t
ft_code_extra_index(const char *key_name)
{
    /* Kept in the interpreter dict so a re-import reuses the slot instead of using up
       another of the fixed MAX_CO_EXTRA_USERS (Modules/_testcapi/code.c does the same). */
    PyObject *interp_dict = PyInterpreterState_GetDict(PyInterpreterState_Get());
    if (interp_dict == NULL) {
        return -1;
    }
    PyObject *key = PyUnicode_FromString(key_name);
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
    int rc = PyDict_SetItemString(interp_dict, key_name, value);
    Py_DECREF(value);
    return rc < 0 ? -1 : index;
}

ft_codeinfo *
ft_codeinfo_new(PyObject *code, Py_ssize_t extra_index)
{
    ft_codeinfo *info = PyMem_Calloc(1, sizeof(ft_codeinfo));
    if (info == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    /* Set once per code object and never replaced, so the slot has exactly one owner.
       Only ft_codeinfo_get calls this, and only when the slot is empty. */
    if (PyUnstable_Code_SetExtra(code, extra_index, info) < 0) {
        PyMem_Free(info);
        return NULL;
    }
    return info;
}

int
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

static int
ft_compare_bpline(const void *a, const void *b)
{
    int la = ((const ft_bpline *)a)->line, lb = ((const ft_bpline *)b)->line;
    return (la > lb) - (la < lb);
}

/* 1 when fast is a (function, names, comparison) triple C can use: a function taking
   the named variables, and None or a comparison (see ft_compare in trampoline.c) of
   those variables and constants. */
static int
ft_is_fast_condition(PyObject *fast)
{
    if (!PyTuple_Check(fast) || PyTuple_GET_SIZE(fast) != 3 || !PyFunction_Check(PyTuple_GET_ITEM(fast, 0))
        || !PyTuple_Check(PyTuple_GET_ITEM(fast, 1))) {
        return 0;
    }
    PyCodeObject *code = (PyCodeObject *)PyFunction_GET_CODE(PyTuple_GET_ITEM(fast, 0));
    PyObject *names = PyTuple_GET_ITEM(fast, 1);
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n > FT_FAST_CONDITION_MAX_ARGS || code->co_argcount != n || code->co_kwonlyargcount != 0
        || (code->co_flags & (CO_VARARGS | CO_VARKEYWORDS)) != 0) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(names, i))) {
            return 0;
        }
    }
    PyObject *comparison = PyTuple_GET_ITEM(fast, 2);
    if (comparison == Py_None) {
        return 1;
    }
    if (!PyTuple_Check(comparison) || PyTuple_GET_SIZE(comparison) != 5
        || !ft_is_small_int(PyTuple_GET_ITEM(comparison, 0), 0, FT_COMPARE_COUNT)) {
        return 0;
    }
    for (int side = 1; side <= 3; side += 2) {
        PyObject *kind = PyTuple_GET_ITEM(comparison, side);
        if (!ft_is_small_int(kind, FT_OPERAND_VARIABLE, FT_OPERAND_CONSTANT + 1)) {
            return 0;
        }
        if (ft_small_int_value(kind) == FT_OPERAND_VARIABLE
            && !ft_is_small_int(PyTuple_GET_ITEM(comparison, side + 1), 0, n)) {
            return 0;
        }
    }
    return 1;
}

/* The globals of the frame running code, a new reference; NULL (no exception) when the
   current frame runs other code. */
static PyObject *
ft_globals_of_running(PyObject *code)
{
    PyFrameObject *frame = PyEval_GetFrame();   /* borrowed: the event's frame */
    if (frame == NULL) {
        return NULL;
    }
    PyCodeObject *running = PyFrame_GetCode(frame);
    PyObject *globals = (PyObject *)running == code ? PyFrame_GetGlobals(frame) : NULL;
    Py_DECREF(running);
    return globals;
}

int
ft_codeinfo_load(ft_codeinfo *info, PyObject *answer, PyTypeObject *budget_type, PyObject *code,
                 PyObject *compiler)
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
    PyObject *entries = PyTuple_GET_ITEM(answer, 1);   /* borrowed: owned by answer */
    Py_ssize_t n = PyTuple_GET_SIZE(entries);
    ft_bpline *lines = NULL;   /* owned until stored in info */
    PyObject *globals = NULL;  /* owned */
    if (n > 0) {
        lines = PyMem_Calloc((size_t)n, sizeof(ft_bpline));
        if (lines == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        globals = compiler != NULL ? ft_globals_of_running(code) : NULL;
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
        if (condition != Py_None && globals != NULL) {
            PyObject *fast = PyObject_CallFunctionObjArgs(compiler, condition, code, globals, NULL);
            if (fast == NULL) {
                goto error;
            }
            if (fast != Py_None && !ft_is_fast_condition(fast)) {
                Py_DECREF(fast);
                PyErr_Format(PyExc_TypeError,
                             "the condition compiler must return None or (function, names, comparison) with "
                             "at most %d positional parameters, one per name",
                             FT_FAST_CONDITION_MAX_ARGS);
                goto error;
            }
            if (fast == Py_None) {
                Py_DECREF(fast);
            }
            else {
                lines[i].fast = fast;
            }
        }
    }
    Py_XDECREF(globals);
    if (n > 1) {
        qsort(lines, (size_t)n, sizeof(ft_bpline), ft_compare_bpline);
    }
    info->lines = lines;
    info->n_lines = n;
    info->function_bp = function_bp;
    return 0;
error:
    Py_XDECREF(globals);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(lines[i].condition);
        Py_XDECREF(lines[i].fast);
        Py_XDECREF(lines[i].budget);
    }
    PyMem_Free(lines);
    return -1;
}

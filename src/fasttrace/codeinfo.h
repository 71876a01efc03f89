/* codeinfo.h: the per-code table kept in a code object's co_extra slot.

   Each code object the filter has seen owns one ft_codeinfo through our code-extra
   slot.  It is made on the code's first event, never replaced, and freed by
   ft_codeinfo_free (the slot's freefunc) together with the code object, so nothing
   outlives its code and the slot has exactly one owner.  A table is invalidated by a
   generation number, never swept: the Tracer recomputes it on its next event.

   The two lookups the event path makes (ft_codeinfo_get, ft_codeinfo_find) are
   static inline here; making, loading and freeing tables is in codeinfo.c. */
#ifndef FASTTRACE_CODEINFO_H
#define FASTTRACE_CODEINFO_H

#include "fasttrace.h"

typedef struct {
    int line;
    PyObject *condition;   /* owned: compiled condition of a condition-only breakpoint, or NULL */
    PyObject *fast;        /* owned: (function, names, comparison) computing condition from the frame's
                              variables (engine/conditions.py), or NULL where only the general path
                              is exact */
    BudgetObject *budget;  /* owned: the breakpoint's budget (see budget.h), or NULL */
} ft_bpline;

typedef struct {
    uint64_t generation;   /* tracer generation the table was computed for; 0 = never */
    uint64_t tool0_line_tracer;  /* id of the Tracer whose tool (pydevd's tool 0, or the probes'
                                    tool) has LINE enabled locally on this code; a later Tracer
                                    starts with none armed */
    int function_bp;       /* a function breakpoint names this code */
    Py_ssize_t n_lines;
    ft_bpline *lines;      /* owned, sorted by line; NULL when n_lines == 0 */
} ft_codeinfo;

/* A code-extra slot index of this interpreter, requested once per key and kept in the
   interpreter dict under key; -1 with an exception set. */
Py_ssize_t ft_code_extra_index(const char *key);

#define FT_CODE_EXTRA_INDEX_KEY "fastattach._fasttrace.code_extra_index"
#define FT_PROBE_CODE_EXTRA_INDEX_KEY "fastattach._fasttrace.probe_code_extra_index"

/* Make code's table and store it in its empty slot.  Borrowed: owned by the code
   object.  NULL with an exception set. */
ft_codeinfo *ft_codeinfo_new(PyObject *code, Py_ssize_t extra_index);

/* The table in code's co_extra slot, without making one: 0 with *info set (NULL when no
   event of this code reached the filter), -1 with an exception set.  caller names the
   Python function in the TypeError for a non-code argument. */
int ft_codeinfo_peek(PyObject *code, Py_ssize_t extra_index, const char *caller, ft_codeinfo **info);

/* The most variables a condition's function reads (engine/conditions.py MAX_VARIABLES). */
#define FT_FAST_CONDITION_MAX_ARGS 8

/* A comparison C makes itself (engine/conditions.py _COMPARISONS): Py_LT..Py_GE, then these. */
enum { FT_COMPARE_IS = 6, FT_COMPARE_IS_NOT, FT_COMPARE_IN, FT_COMPARE_NOT_IN, FT_COMPARE_COUNT };
/* The kinds of a comparison's operands: a variable (its index in names) or a constant. */
enum { FT_OPERAND_VARIABLE = 0, FT_OPERAND_CONSTANT = 1 };

/* 1 when v is an exact int in [lo, hi) stored in one digit, whose value
   ft_small_int_value then reads inline (ft_codeinfo_load checks every int of a
   comparison this way, so the hit path never calls PyLong_AsLong).  Never raises. */
static inline int
ft_is_small_int(PyObject *v, long lo, long hi)
{
    if (!PyLong_CheckExact(v) || !PyUnstable_Long_IsCompact((PyLongObject *)v)) {
        return 0;
    }
    Py_ssize_t value = PyUnstable_Long_CompactValue((PyLongObject *)v);
    return value >= lo && value < hi;
}

static inline long
ft_small_int_value(PyObject *v)
{
    return (long)PyUnstable_Long_CompactValue((PyLongObject *)v);
}

/* Fill info from compute(code)'s answer: None, or
   (function_bp, ((line, condition|None[, budget|None]), ...)).  With a compiler
   (set_condition_compiler), each condition also gets compiler(condition, code, globals)'s
   (function, names, comparison) or None, globals being those of the frame running code (the event's),
   or no function when the current frame runs other code.  0, or -1 with an exception set
   and info left empty. */
int ft_codeinfo_load(ft_codeinfo *info, PyObject *answer, PyTypeObject *budget_type, PyObject *code,
                     PyObject *compiler);

/* code's table, made on its first event.  Borrowed: owned by the code object.  NULL
   with an exception set on failure. */
static inline ft_codeinfo *
ft_codeinfo_get(PyObject *code, Py_ssize_t extra_index)
{
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, extra_index, &extra) < 0) {
        return NULL;
    }
    if (extra != NULL) {
        return (ft_codeinfo *)extra;
    }
    return ft_codeinfo_new(code, extra_index);
}

/* The breakpoint on line, or NULL.  Borrowed: points into info->lines, which the next
   reload of info frees. */
static inline const ft_bpline *
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

#endif /* FASTTRACE_CODEINFO_H */

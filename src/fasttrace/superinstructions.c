/* superinstructions.c: CPython 3.12 only.  The whole file is under FT_PY312.

   CPython 3.12's _Py_Instrument rewrites every superinstruction of a code object to its
   first half when it inserts any event there, and only code creation makes them.  So
   every code object that runs under pydevd's global PY_START loses them for as long as
   it lives, which costs instructions on every run of it (measured in
   benchmarks/results/issue2-instructions.md).  When PY_START answers DISABLE, nothing
   of ours stays in the code, so the pairs are formed again here, exactly as
   _PyCode_Quicken forms them.

   Safe because: the code is left alone if anything but RESUME is instrumented (a line
   event, say, must see both halves); the second half of a pair is never changed, so a
   frame of another thread paused between the two runs on correctly; and the next time
   CPython instruments this code it undoes them first, as it did before.

   The opcode tables come from python/fastattach/_requicken.py through
   set_superinstruction_table() (module.c). */
#include "fasttrace.h"

#if FT_PY312

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

/* The caller (ft_reform_superinstructions, fasttrace.h) has checked st->reform_ready. */
Py_ssize_t
ft_superinstructions_reform(const fasttrace_state *st, PyCodeObject *code)
{
    _Py_CODEUNIT *instructions = (_Py_CODEUNIT *)code->co_code_adaptive;   /* borrowed: code's */
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
}

#endif /* FT_PY312 */

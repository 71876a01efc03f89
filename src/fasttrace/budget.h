/* budget.h: a breakpoint's budget, and the budget half of a hit.

   A Budget holds token buckets for condition evaluations, probe outputs (logpoint
   messages, snapshots), output bytes, and the time the hits cost, measured against
   the wall clock.  Python creates one per breakpoint and keeps it across table
   reloads; each ft_bpline entry owns one reference.  The hit path only reads the
   clock and does arithmetic: no allocation, no Python call, until a budget trips.  A
   paused budget makes its line answer DISABLE, so it then costs what any other
   disabled line costs; Python resumes it (and calls sys.monitoring.restart_events()
   to re-arm the line) after a cool-down.

   Everything the hit path calls is static inline here; trampoline.c's
   ft_on_budgeted_hit holds the other half of a hit, the calls into Python.  The type
   (methods, getters, stats) is budget.c. */
#ifndef FASTTRACE_BUDGET_H
#define FASTTRACE_BUDGET_H

#include "fasttrace.h"

/* Why a budget paused: X(ENUM_SUFFIX, "Budget.reason"). */
#define FT_BUDGET_REASONS(X)        \
    X(NONE, "none")                 \
    X(EVALUATIONS, "evaluations")   \
    X(OUTPUTS, "outputs")           \
    X(BYTES, "bytes")               \
    X(TIME, "time")                 \
    X(EXTERNAL, "external")

enum ft_reason {
#define FT_REASON_ENUM(NAME, name) BR_##NAME,
    FT_BUDGET_REASONS(FT_REASON_ENUM)
#undef FT_REASON_ENUM
    BR_COUNT
};

/* The counters of Budget.stats(), one X-macro for the fields and their names. */
#define FT_BUDGET_COUNTERS(X) \
    X(hits) X(evaluations) X(outputs) X(bytes) X(time_ns) X(trips) X(paused_hits) X(dropped) X(probe_errors)

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
    int64_t refilled_at;       /* ft_monotonic_ns(), like time.monotonic_ns() */
    int64_t first_hit_at;      /* first hit since creation or the last resume */
    int64_t paused_at;
    int paused;
    int reason;                /* enum ft_reason */
    /* Counters (Budget.stats()). */
#define FT_BUDGET_FIELD(name) unsigned long long name;
    FT_BUDGET_COUNTERS(FT_BUDGET_FIELD)
#undef FT_BUDGET_FIELD
};

/* ------------------------------------------------------------------ token buckets */

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

static inline void
ft_budget_fill(BudgetObject *b, int64_t now)
{
    b->eval_tokens = ft_count_capacity(b->eval_rate);
    b->output_tokens = ft_count_capacity(b->output_rate);
    b->byte_tokens = b->byte_rate;
    b->time_tokens = b->time_fraction * (double)FT_NS_PER_S;
    b->refilled_at = now;
}

static inline void
ft_budget_refill(BudgetObject *b, int64_t now)
{
    int64_t elapsed = now - b->refilled_at;
    if (elapsed <= 0) {
        return;
    }
    double seconds = (double)elapsed / (double)FT_NS_PER_S;
    b->refilled_at = now;
    b->eval_tokens = ft_min(ft_count_capacity(b->eval_rate), b->eval_tokens + b->eval_rate * seconds);
    b->output_tokens = ft_min(ft_count_capacity(b->output_rate), b->output_tokens + b->output_rate * seconds);
    b->byte_tokens = ft_min(b->byte_rate, b->byte_tokens + b->byte_rate * seconds);
    b->time_tokens = ft_min(b->time_fraction * (double)FT_NS_PER_S,
                            b->time_tokens + b->time_fraction * (double)elapsed);
}

/* Mark b paused; 1 if this call paused it (the caller then reports it). */
static inline int
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
static inline int
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

/* ------------------------------------------------------------------ the budget half of a hit */

/* A hit on a paused budget: the line answers DISABLE and the hit is dropped. */
static inline void
ft_budget_count_paused_hit(BudgetObject *b)
{
    b->paused_hits++;
    b->dropped++;
}

/* A hit on a running budget, before anything runs for it.  1: go on.  0: the hit is
   dropped (and counted), and *tripped is 1 if this hit paused the budget. */
static inline int
ft_budget_admit(BudgetObject *b, int64_t now, int *tripped)
{
    if (b->first_hit_at == 0) {
        b->first_hit_at = now;
    }
    b->hits++;
    ft_budget_refill(b, now);
    if (b->counts_evaluations) {
        if (b->eval_rate > 0 && b->eval_tokens < 1.0) {
            *tripped = ft_budget_pause(b, BR_EVALUATIONS, now);
            b->dropped++;
            return 0;
        }
        b->eval_tokens -= 1.0;
        b->evaluations++;
    }
    if (b->probe && b->output_rate > 0 && b->output_tokens < 1.0) {
        *tripped = ft_budget_pause(b, BR_OUTPUTS, now);
        b->dropped++;
        return 0;
    }
    return 1;
}

/* The probe output n >= 0 bytes; 1 if that paused the budget. */
static inline int
ft_budget_count_output(BudgetObject *b, long long n, int64_t now)
{
    b->outputs++;
    b->bytes += (unsigned long long)n;
    b->output_tokens -= 1.0;
    if (b->byte_rate > 0) {
        b->byte_tokens -= (double)n;
        if (b->byte_tokens < 0) {
            return ft_budget_pause(b, BR_BYTES, now);
        }
    }
    return 0;
}

#endif /* FASTTRACE_BUDGET_H */

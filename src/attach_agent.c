/* attach_agent: the shared object fastattach's ptrace injector dlopen()s into a target.

   The injector borrows a thread that may be anywhere: blocked in a syscall, or inside the
   GIL machinery. Running Python there can deadlock (nested take_gil on a condvar the
   interrupted wait still holds) or re-enter the interpreter mid-bytecode. So the only
   thing that happens on the borrowed thread is fastattach_agent_start(): copy the code
   string and pthread_create. The new thread takes the GIL like any other thread
   (PyGILState_Ensure) and runs the code.

   Every Py* function is looked up with dlsym(RTLD_DEFAULT), so the library carries no
   link-time dependency on one libpython and loads into 3.12 and 3.13 alike; a process
   without them gets an error code, not a crash. Linked with -z nodelete: a later dlclose
   can never unmap code a running agent thread is still executing. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* Return codes of fastattach_agent_start, read by python/fastattach/attach/_injector.py. */
#define AGENT_OK 0
#define AGENT_NOT_PYTHON 1
#define AGENT_NOT_INITIALIZED 2
#define AGENT_NO_MEMORY 3
#define AGENT_THREAD_FAILED 4

typedef int (*int_void_fn)(void);
typedef int (*gil_ensure_fn)(void);
typedef void (*gil_release_fn)(int);
typedef int (*run_string_fn)(const char *);

typedef struct {
    gil_ensure_fn gil_ensure;
    gil_release_fn gil_release;
    run_string_fn run_simple_string;
    int_void_fn is_initialized;
    int_void_fn is_finalizing;   /* may be NULL */
    char *code;                  /* owned; freed by the agent thread */
} agent_job;

/* POSIX lets dlsym's result be used as a function pointer; ISO C has no such conversion,
   so copy the bits, which keeps even -Wpedantic quiet. */
static void
agent_lookup(const char *name, void *function_pointer_out)
{
    void *symbol = dlsym(RTLD_DEFAULT, name);
    memcpy(function_pointer_out, &symbol, sizeof(symbol));
}

static void *
agent_thread(void *arg)
{
    agent_job *job = (agent_job *)arg;
    /* Finalization can start between the injector's check and now; taking the GIL then
       would block or exit this thread inside the interpreter's teardown. */
    if (job->is_initialized() && !(job->is_finalizing && job->is_finalizing())) {
        int gil_state = job->gil_ensure();
        /* The code catches every exception itself (see bootstrap_code in
           python/fastattach/attach/_orchestrator.py), so nothing is
           printed into the target's stderr and nothing propagates. */
        job->run_simple_string(job->code);
        job->gil_release(gil_state);
    }
    free(job->code);
    free(job);
    return NULL;
}

__attribute__((visibility("default"))) int
fastattach_agent_start(const char *python_code)
{
    int saved_errno = errno;  /* the borrowed thread's errno must look untouched */
    int result = AGENT_OK;
    agent_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        result = AGENT_NO_MEMORY;
        goto done;
    }
    agent_lookup("PyGILState_Ensure", &job->gil_ensure);
    agent_lookup("PyGILState_Release", &job->gil_release);
    agent_lookup("PyRun_SimpleString", &job->run_simple_string);
    agent_lookup("Py_IsInitialized", &job->is_initialized);
    /* Py_IsFinalizing is public from 3.13; 3.12 only has the underscore name. */
    agent_lookup("Py_IsFinalizing", &job->is_finalizing);
    if (job->is_finalizing == NULL) {
        agent_lookup("_Py_IsFinalizing", &job->is_finalizing);
    }
    if (!job->gil_ensure || !job->gil_release || !job->run_simple_string || !job->is_initialized) {
        result = AGENT_NOT_PYTHON;
        goto done;
    }
    if (!job->is_initialized()) {
        result = AGENT_NOT_INITIALIZED;
        goto done;
    }
    job->code = strdup(python_code);
    if (job->code == NULL) {
        result = AGENT_NO_MEMORY;
        goto done;
    }

    /* Block every signal in the new thread, so the kernel keeps delivering process
       signals to the target's own threads, exactly as before the attach. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, agent_thread, job);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (rc != 0) {
        result = AGENT_THREAD_FAILED;
        goto done;
    }
    job = NULL;  /* owned by the thread now */

done:
    if (job != NULL) {
        free(job->code);
        free(job);
    }
    errno = saved_errno;
    return result;
}

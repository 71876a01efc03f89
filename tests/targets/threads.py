"""Debuggee with several live threads that reach one breakpoint in turn.

    threads.py [COUNT]

Every worker is running (blocked on its turn) while the others are stopped, so the
thread list is complete at each stop; taking turns makes the stop order certain, since
pydevd suspends all threads on a stop and a thread released at the breakpoint line does
not stop there again.
"""

import sys
import threading

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 4
results = [None] * COUNT
turns = [threading.Event() for _ in range(COUNT)]


def work(index):
    if not turns[index].wait(60):
        raise TimeoutError(f"worker {index} never got its turn")
    value = index * index  # MARK-WORKER
    results[index] = value
    if index + 1 < COUNT:
        turns[index + 1].set()


threads = [threading.Thread(target=work, args=(n,), name=f"worker-{n}") for n in range(COUNT)]
for thread in threads:
    thread.start()
turns[0].set()
for thread in threads:
    thread.join(120)
print("RESULTS", results, flush=True)

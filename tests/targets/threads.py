"""Debuggee with several threads that reach the same breakpoint together.

    threads.py [COUNT]
"""

import sys
import threading

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 4
results = [None] * COUNT
barrier = threading.Barrier(COUNT, timeout=60)


def work(index):
    barrier.wait()
    value = index * index  # MARK-WORKER
    results[index] = value


threads = [threading.Thread(target=work, args=(n,), name=f"worker-{n}") for n in range(COUNT)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(120)
print("RESULTS", results, flush=True)

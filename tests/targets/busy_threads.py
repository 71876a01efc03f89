"""Debuggee whose threads all run the same hot loop at once.

    busy_threads.py [COUNT] [ITERATIONS]

Each worker sums its loop counter; the main thread prints every worker's total.
A breakpoint with a condition on one worker's loop line has every thread racing
through that line while only one of them may stop.
"""

import sys
import threading
import time

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 4
ITERATIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
totals = [0] * COUNT
start = threading.Barrier(COUNT, timeout=60)


def work(index):
    start.wait()
    total = 0
    for n in range(ITERATIONS):
        total += n  # MARK-BUSY
        time.sleep(0.001)  # MARK-BUSY-NEXT
    totals[index] = total


threads = [threading.Thread(target=work, args=(k,), name=f"worker-{k}") for k in range(COUNT)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(120)
print("TOTALS", totals, flush=True)

"""Debuggee that keeps running until told to stop: for disconnect, re-attach and pause.

    ticker.py STOP_FILE

Ticks until STOP_FILE exists (or 120 s pass, so a broken test never leaves it running),
printing every 20th tick so a test can see it run with no client attached, then prints
the last tick and exits 0.
"""

import os
import sys
import time


def run(stop_file, limit_s=120.0):
    deadline = time.monotonic() + limit_s
    tick = 0
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        tick += 1  # MARK-TICK
        if tick % 20 == 0:
            print("TICK", tick, flush=True)
        time.sleep(0.01)  # MARK-SLEEP
    return tick  # MARK-RETURN


print("TICKER-STARTED", flush=True)
last = run(sys.argv[1])
print("TICKER-DONE", last, flush=True)

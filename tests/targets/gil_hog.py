"""Debuggee whose main thread never waits: it computes, and every ~100 us makes one short
system call (a stat), so it releases and retakes the GIL far more often than the 5 ms
switch interval. Beside such a loop, a thread that gives the GIL away (every import does,
thousands of times) waits a whole interval or longer to get it back.

    gil_hog.py SECONDS

Stops after SECONDS. While the file named by GIL_HOG_HIT exists it runs the line marked
HOG-HIT, where tests put a breakpoint; when the file named by GIL_HOG_REPORT appears, it
prints "interval <sys.getswitchinterval()>" and removes the file.
"""

import os
import sys
import time

deadline = time.monotonic() + float(sys.argv[1])
hit_file = os.environ.get("GIL_HOG_HIT", "/nonexistent")
report_file = os.environ.get("GIL_HOG_REPORT", "/nonexistent")
print("spinning", flush=True)
total = 0
while time.monotonic() < deadline:
    for i in range(2000):
        total += i * i
    if os.path.exists(hit_file):
        total = 0  # HOG-HIT
    if os.path.exists(report_file):
        os.unlink(report_file)
        print("interval", sys.getswitchinterval(), flush=True)
print("done", flush=True)

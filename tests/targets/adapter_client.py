"""Debuggee for the tests of what clients expect from debugpy's adapter (tests/test_adapter_parity.py).

    adapter_client.py MODE

Stops at MARK-STOP, then: MODE "exit" prints EXITING and calls os._exit(3) at once;
"spin" runs (a worker thread too) until the test sets the debuggee's `stop_spinning`;
"output" prints non-ASCII text and tabs to stdout and stderr; "end" just ends.
"""

import os
import sys
import threading
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "end"
stop_spinning = False


def spin():
    deadline = time.monotonic() + 120
    while not stop_spinning and time.monotonic() < deadline:
        time.sleep(0.01)  # MARK-SPIN


worker = threading.Thread(target=spin, name="spinner", daemon=True)
worker.start()
print("STARTED", flush=True)
reached = True  # MARK-STOP
if MODE == "exit":
    print("EXITING", flush=True)
    os._exit(3)
elif MODE == "spin":
    spin()
elif MODE == "output":
    print("héllo\twörld ✓ 日本", flush=True)
    print("err\tñ ✗", file=sys.stderr, flush=True)
    sys.stdout.write("no newline\t∑")
    sys.stdout.flush()
    print(flush=True)
print("DONE", flush=True)

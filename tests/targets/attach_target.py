"""A process to attach to by PID, started without any debugger, in one of several states.

    attach_target.py STATE [LIMIT_S]

STATE (what the main thread does while the test attaches):
  busy    a single-threaded pure-Python loop
  busy2   two CPU-bound worker threads; the main thread waits in join()
  sleep   time.sleep(); a worker thread waits on stdin
  accept  socket.accept() on a port printed as "accept-port N"
  alloc   a loop that churns dicts, lists and strings

Every state prints "ready" once running. The line marked ``# ATTACH-HIT`` runs when the
test asks for it: busy/busy2/alloc run it on every iteration once the file named by
ATTACH_GO_FILE exists; sleep runs it when a line arrives on stdin; accept when a client
connects. ``hit()`` returns a value the test evaluates (``token``). The process exits on its
own after LIMIT_S seconds (default 300), so a broken test never leaves it running.
"""

import os
import sys
import threading
import time

STATE = sys.argv[1]
LIMIT_S = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
GO_FILE = os.environ.get("ATTACH_GO_FILE", "")
DEADLINE = time.monotonic() + LIMIT_S
hits = 0


def hit(source):
    global hits
    token = f"{source}-{os.getpid()}"
    hits += 1  # ATTACH-HIT
    return token


def go():
    return bool(GO_FILE) and os.path.exists(GO_FILE)


def spin(name):
    total = 0
    while time.monotonic() < DEADLINE:
        for i in range(2000):
            total += i * i
        if go():
            hit(name)


def churn():
    keep = []
    while time.monotonic() < DEADLINE:
        for i in range(200):
            keep.append({"k": str(i) * 3, "v": [i, i + 1, (i, "x")]})
        if len(keep) > 5000:
            del keep[:4000]
        if go():
            hit("alloc")


def exit_at_deadline():
    time.sleep(max(0.0, DEADLINE - time.monotonic()))
    os._exit(0)


if STATE == "busy":
    print("ready", flush=True)
    spin("busy")
elif STATE == "busy2":
    workers = [threading.Thread(target=spin, args=(f"worker{n}",), daemon=True) for n in range(2)]
    for worker in workers:
        worker.start()
    print("ready", flush=True)
    for worker in workers:
        worker.join()
elif STATE == "sleep":
    def wait_for_stdin():
        for _line in sys.stdin:
            print("stdin line", hit("stdin"), flush=True)

    threading.Thread(target=wait_for_stdin, daemon=True).start()
    threading.Thread(target=exit_at_deadline, daemon=True).start()
    print("ready", flush=True)
    time.sleep(LIMIT_S)
elif STATE == "accept":
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    threading.Thread(target=exit_at_deadline, daemon=True).start()
    print(f"accept-port {server.getsockname()[1]}", flush=True)
    print("ready", flush=True)
    while True:
        connection, _ = server.accept()
        print("accepted", hit("accept"), flush=True)
        connection.close()
elif STATE == "alloc":
    print("ready", flush=True)
    churn()
else:
    sys.exit(f"unknown state {STATE!r}")

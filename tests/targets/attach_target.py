"""A process to attach to by PID, started without any debugger, in one of several states.

    attach_target.py STATE [LIMIT_S]

STATE (what the main thread does while the test attaches):
  busy    a single-threaded pure-Python loop
  busy2   two CPU-bound worker threads; the main thread waits in join()
  sleep   time.sleep(); a worker thread reads commands from stdin
  accept  socket.accept() on a port printed as "accept-port N"; each client sends a command
  alloc   a loop that churns dicts, lists and strings

Every state prints "ready" once running. Commands reach the code that runs in that state:
busy, busy2 and alloc check for files (ATTACH_CONTROL_DIR/hit, ATTACH_CONTROL_DIR/stop) in
their loops; sleep reads "hit"/"stop" lines on stdin; accept reads one from each client.
"hit" runs the line marked ATTACH-HIT (where tests put a breakpoint; busy states keep
hitting it while the file exists). "stop" calls fastattach.stop() in the target, then prints
"probe {json}" with what sys.monitoring still has registered, so a test can check the
overhead went back to none. The process exits on its own after LIMIT_S seconds (default
300), so a broken test never leaves it running.
"""

import json
import os
import sys
import threading
import time

STATE = sys.argv[1]
LIMIT_S = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
CONTROL_DIR = os.environ.get("ATTACH_CONTROL_DIR", "")
DEADLINE = time.monotonic() + LIMIT_S
OUR_THREADS = {"MainThread", "worker0", "worker1", "commands", "deadline"}
hits = 0


def hit(source):
    global hits
    token = f"{source}-{os.getpid()}"
    hits += 1  # ATTACH-HIT
    return token


def stop_and_probe():
    """fastattach.stop(), then report every sys.monitoring tool and event still registered."""
    fastattach = sys.modules.get("fastattach")
    if fastattach is not None:
        fastattach.stop()
    monitoring = sys.monitoring
    report = {
        "tools": {i: monitoring.get_tool(i) for i in range(6) if monitoring.get_tool(i) is not None},
        "global_events": {i: monitoring.get_events(i) for i in range(6) if monitoring.get_events(i)},
        "local_events": {i: monitoring.get_local_events(i, hit.__code__) for i in range(6)
                         if monitoring.get_local_events(i, hit.__code__)},
        "settrace": sys.gettrace() is not None,
        "debugger_threads": sorted(t.name for t in threading.enumerate() if t.name not in OUR_THREADS),
    }
    print("probe", json.dumps(report), flush=True)


def command(text, source):
    if text == "hit":
        print("hit", hit(source), flush=True)
    elif text == "stop":
        stop_and_probe()


def control(source):
    """Called from the loops of the busy states: act on the control files."""
    if not CONTROL_DIR:
        return
    if os.path.exists(os.path.join(CONTROL_DIR, "hit")):
        hit(source)
    stop_file = os.path.join(CONTROL_DIR, "stop")
    if os.path.exists(stop_file):
        try:
            os.rename(stop_file, stop_file + ".taken")  # exactly one thread acts on it
        except OSError:
            return
        stop_and_probe()


def spin(name):
    total = 0
    while time.monotonic() < DEADLINE:
        for i in range(2000):
            total += i * i
        control(name)


def churn():
    keep = []
    while time.monotonic() < DEADLINE:
        for i in range(200):
            keep.append({"k": str(i) * 3, "v": [i, i + 1, (i, "x")]})
        if len(keep) > 5000:
            del keep[:4000]
        control("alloc")


def exit_at_deadline():
    time.sleep(max(0.0, DEADLINE - time.monotonic()))
    os._exit(0)


if STATE == "busy":
    print("ready", flush=True)
    spin("busy")
elif STATE == "busy2":
    workers = [threading.Thread(target=spin, args=(f"worker{n}",), name=f"worker{n}", daemon=True) for n in range(2)]
    for worker in workers:
        worker.start()
    print("ready", flush=True)
    for worker in workers:
        worker.join()
elif STATE == "sleep":
    def read_commands():
        for line in sys.stdin:
            command(line.strip(), "stdin")

    threading.Thread(target=read_commands, name="commands", daemon=True).start()
    threading.Thread(target=exit_at_deadline, name="deadline", daemon=True).start()
    print("ready", flush=True)
    time.sleep(LIMIT_S)
elif STATE == "accept":
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    threading.Thread(target=exit_at_deadline, name="deadline", daemon=True).start()
    print(f"accept-port {server.getsockname()[1]}", flush=True)
    print("ready", flush=True)
    while True:
        connection, _ = server.accept()
        with connection:
            connection.settimeout(10)
            try:
                text = connection.recv(64).decode().strip()
            except OSError:
                text = ""
            print("accepted", flush=True)
            command(text, "accept")
elif STATE == "alloc":
    print("ready", flush=True)
    churn()
else:
    sys.exit(f"unknown state {STATE!r}")

"""Forks as argv[1] says and has each child write down what fastattach left in it (tests/test_fork.py).

Modes: "fork" (os.fork), "mp-fork" (a multiprocessing fork Process), "pool-fork" /
"pool-spawn" / "pool-forkserver" (a ProcessPoolExecutor), "held" (a thread stops at the
breakpoint marked held-breakpoint and the client forks from there by evaluating
fork_and_report). Reports go to argv[2] as child-<pid>.json; then the parent runs
child_work() until the file argv[2]/stop appears, so a client can check its session.
"""

import concurrent.futures
import json
import multiprocessing
import os
import sys
import threading
import time


def child_work(n):
    total = n * 2  # child-breakpoint
    return total


def held():
    reached = 1  # held-breakpoint
    return reached


def report(mode: str) -> dict:
    """What fastattach and pydevd left in this (child) process, written to the report directory."""
    import psutil

    calls = [child_work(n) for n in range(3)]   # would stop here if the child had inherited the session
    from fastattach import _api

    tool = sys.monitoring.DEBUGGER_ID
    constants = sys.modules.get("_pydevd_bundle.pydevd_constants")
    found = {
        "mode": mode,
        "pid": os.getpid(),
        "calls": calls,
        "tools": {str(i): sys.monitoring.get_tool(i) for i in range(6) if sys.monitoring.get_tool(i) is not None},
        "debugger_events": sys.monitoring.get_events(tool) if sys.monitoring.get_tool(tool) else 0,
        "settrace": repr(sys.gettrace()),
        "global_debugger": repr(constants.get_global_debugger()) if constants else "None",
        "listener": repr(_api.session().listener),
        "host": repr(_api.session().host),
        "listening_ports": sorted(c.laddr.port for c in psutil.Process().net_connections(kind="inet")
                                  if c.status == psutil.CONN_LISTEN),
        "threads": sorted(t.name for t in threading.enumerate()),
        "breakpointhook": getattr(sys.breakpointhook, "__module__", "?"),
        "switch_interval": sys.getswitchinterval(),
    }
    with open(os.path.join(sys.argv[2] if len(sys.argv) > 2 else os.environ["FORKING_OUT"],
                           f"child-{os.getpid()}.json"), "w") as out:
        json.dump(found, out)
    return found


def fork_and_report(mode: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            report(mode)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def pool_task(n):
    return report(f"pool-{n}")["calls"]


def main() -> None:
    mode, out_dir = sys.argv[1], sys.argv[2]
    os.environ["FORKING_OUT"] = out_dir   # spawned pool workers see no argv[2]
    print(f"PARENT {os.getpid()} {mode}", flush=True)
    if mode == "fork":
        print("CHILD EXIT", fork_and_report(mode), flush=True)
    elif mode == "mp-fork":
        process = multiprocessing.get_context("fork").Process(target=report, args=(mode,))
        process.start()
        process.join()
        print("CHILD EXIT", process.exitcode, flush=True)
    elif mode.startswith("pool-"):
        context = multiprocessing.get_context(mode.removeprefix("pool-"))
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
            results = list(pool.map(pool_task, range(4)))
        print("POOL", json.dumps(results), flush=True)
    elif mode == "held":
        thread = threading.Thread(target=held, name="held")
        thread.start()
        thread.join()
    print("PARENT done", flush=True)
    stop = os.path.join(out_dir, "stop")
    while not os.path.exists(stop):
        child_work(0)
        time.sleep(0.05)
    print("PARENT stopped", flush=True)


if __name__ == "__main__":
    main()

"""Starts one child in the way argv[1] names, once the file argv[2] exists (tests/test_children.py).

fork: os.fork; mp-fork / mp-spawn / mp-forkserver: a ProcessPoolExecutor of that start
method; subprocess: subprocess.run([sys.executable, this file, "leaf"]); leaf: the child
of "subprocess"; fork-guarded: os.fork with an at-fork handler of the program's that holds a
lock across the fork. Every child runs work(), whose marked line the tests break on.
"""

import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def work(n):
    doubled = n * 2  # child-breakpoint
    return doubled


def wait_for(path: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


def main(mode: str) -> None:
    if mode == "leaf":
        print(f"CHILD {os.getpid()} env {'FASTATTACH_SUBPROCESS' in os.environ}", flush=True)
        api = sys.modules.get("fastattach._api")   # loaded by the child's session, if it has one
        print(f"CHILD {os.getpid()} production {api and api.get_option('production')}", flush=True)
        print(f"CHILD {os.getpid()} result {work(21)}", flush=True)
        return
    print(f"PARENT {os.getpid()} start", flush=True)
    wait_for(sys.argv[2])
    if mode == "fork":
        pid = os.fork()
        if pid == 0:  # child-entry
            print(f"CHILD {os.getpid()} result {work(21)}", flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(f"CHILD EXIT {os.waitstatus_to_exitcode(status)}", flush=True)
    elif mode == "fork-guarded":   # an at-fork handler of the program's holds a lock across the fork
        import logging
        import threading

        guard = threading.RLock()   # the forking thread may log in its at-fork handlers; others wait

        class GuardedHandler(logging.Handler):   # as a library's handler whose transport forks may not copy mid-use
            def emit(self, record):
                with guard:
                    pass

        logging.getLogger().addHandler(GuardedHandler())
        logging.getLogger().setLevel(logging.DEBUG)
        # registered after the session's: its child handler frees the lock only after ours ran
        os.register_at_fork(before=guard.acquire, after_in_parent=guard.release, after_in_child=guard.release)
        pid = os.fork()
        if pid == 0:
            print(f"CHILD {os.getpid()} result {work(21)}", flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(f"CHILD EXIT {os.waitstatus_to_exitcode(status)}", flush=True)
    elif mode == "grandchild":   # the child forks again: the grandchild runs work()
        pid = os.fork()
        if pid == 0:
            grandchild = os.fork()
            if grandchild == 0:
                print(f"GRANDCHILD {os.getpid()} result {work(21)}", flush=True)
                os._exit(0)
            _, status = os.waitpid(grandchild, 0)
            os._exit(os.waitstatus_to_exitcode(status))
        _, status = os.waitpid(pid, 0)
        print(f"CHILD EXIT {os.waitstatus_to_exitcode(status)}", flush=True)
    elif mode.startswith("mp-"):
        context = multiprocessing.get_context(mode.removeprefix("mp-"))
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            results = list(pool.map(work, [21]))
        print(f"POOL results {results}", flush=True)
    elif mode == "preexec":   # the at-fork handlers run between fork and exec: no session there
        done = subprocess.run(["true"], preexec_fn=os.getpid)
        print(f"CHILD EXIT {done.returncode}", flush=True)
    elif mode == "fastattach":   # a child run under fastattach listens as it is told, not as a child
        done = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", __file__, "leaf"])
        print(f"CHILD EXIT {done.returncode}", flush=True)
    elif mode == "subprocess":
        done = subprocess.run([sys.executable, __file__, "leaf"])
        print(f"CHILD EXIT {done.returncode}", flush=True)
    print("PARENT done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

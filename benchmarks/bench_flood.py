"""How long a client with the right secret takes to attach while the port is flooded.

    python benchmarks/bench_flood.py [--sockets 300] [--reps 5]
    python benchmarks/bench_flood.py --guessers 6 [--reps 5] [--compare-tree DIR]

One debuggee (`python -m fastattach --listen 127.0.0.1:0 --secret S script`), the real pydevd
behind it. Timed: TCP connect to the attach response (initialize, attach, configurationDone:
pydevd included), then disconnect. Reported: median and range, in seconds.

Idle flood (the default): each repetition, A B A B: attach with no flood, then attach while
`sockets` idle unauthenticated TCP connections (connected, sending nothing) are open.

Guessing (--guessers N): N other local users (root forks them and setuids; without root, one
guesser as this user) each run benchmarks/guess_secret.py for --seconds, every connection from
a new 127.x.y.z source address; halfway through, a client with the right secret attaches from
127.0.0.1. Reported: the secrets checked per second (answered "wrong secret") over all
guessers, and the attach time. Then, as root, the aimed case: another user guesses from
127.0.0.1 until locked out, and a client with the right secret attaches from 127.0.0.1.
--compare-tree DIR runs a second debuggee from another source tree (an export of main, say:
`git archive main python | tar -x -C DIR`, with the built _fasttrace and _attach_agent .so
copied into DIR/python/fastattach), and the repetitions alternate A B A B between the two.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
import time

from fastattach.net.client import DAPClient, DAPError

_spec = importlib.util.spec_from_file_location("guess_secret", pathlib.Path(__file__).with_name("guess_secret.py"))
guess_secret = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guess_secret)

GUESSING_UIDS = range(47101, 47200)   # numbers no account has; root may setuid to them

SECRET = "bench-flood-secret-0123456789"
SERVICE = textwrap.dedent("""
    import time
    while True:
        time.sleep(0.05)
""")


def start_debuggee(folder: str, tree: str | None = None) -> tuple[subprocess.Popen, tuple[str, int], str]:
    """The debuggee, from this checkout or (tree) from another source tree's python/ folder."""
    script = os.path.join(folder, "service.py")
    with open(script, "w") as out:
        out.write(SERVICE)
    err_path = os.path.join(folder, f"service{'-' + os.path.basename(tree) if tree else ''}.err")
    interpreter, env = [sys.executable], None
    if tree:
        # -S: no site, so no editable-install finder sends `import fastattach` back to this checkout.
        interpreter.append("-S")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(tree, "python"),
                                                            sysconfig.get_paths()["purelib"]]))
    with open(err_path, "wb") as err:
        process = subprocess.Popen([*interpreter, "-Xfrozen_modules=off", "-m", "fastattach", "--listen",
                                    "127.0.0.1:0", "--secret", SECRET, script],
                                   stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(err_path) as err:
            match = re.search(r"listening on (\S+):(\d+)", err.read())
        if match:
            return process, (match.group(1), int(match.group(2))), err_path
        time.sleep(0.05)
    process.kill()
    with open(err_path) as err:
        raise SystemExit("the debuggee never listened:\n" + err.read()[-2000:])


def open_flood(address: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` idle connections: connected, sending nothing (what a port scan or an attacker holds)."""
    flood = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            continue
        flood.append(sock)
    return flood


def attach_time(address: tuple[str, int]) -> float:
    """Seconds from TCP connect to the attach response, for a client with the right secret."""
    started = time.perf_counter()
    client = DAPClient.connect(*address, timeout=30)
    try:
        client.attach(secret=SECRET, timeout=30)
        elapsed = time.perf_counter() - started
        client.disconnect()
    finally:
        client.close()
    return elapsed


def attach_outcome(address: tuple[str, int]) -> tuple[float, str]:
    """attach_time, or the time to the refusal and its message."""
    started = time.perf_counter()
    try:
        return attach_time(address), "attached"
    except DAPError as error:
        return time.perf_counter() - started, f"refused: {error}"


def guessing_round(address, *, users: int, seconds: float, connections: int) -> dict:
    """Guessers for `seconds`; halfway, a client with the right secret attaches from 127.0.0.1."""
    options = dict(seconds=seconds, connections=connections)
    if os.geteuid() == 0:
        started = [guess_secret.run_as_user(uid, *address, first_source=k * 100_000, **options)
                   for k, uid in enumerate(GUESSING_UIDS[:users])]

        def results() -> list[dict]:
            return [guess_secret.collect(pid, read) for pid, read in started]
    else:   # one guesser, as this user, on threads of this process
        box: list[dict] = []
        thread = threading.Thread(target=lambda: box.append(guess_secret.run(*address, **options)))
        thread.start()

        def results() -> list[dict]:
            thread.join()
            return box
    time.sleep(seconds / 2)
    took, outcome = attach_outcome(address)
    done = results()
    window = max(r["end"] for r in done) - min(r["start"] for r in done)
    return {"checked_per_s": sum(r.get("checked", 0) for r in done) / window,
            "attempts_per_s": sum(r["sources"] for r in done) / window, "attach_s": took, "outcome": outcome}


def aimed_round(address) -> dict:
    """Another user guesses from 127.0.0.1 until locked out; then the right secret, from there too."""
    pid, read = guess_secret.run_as_user(GUESSING_UIDS[-1], *address, seconds=2.0, connections=4,
                                         fixed_source="127.0.0.1")
    guesses = guess_secret.collect(pid, read)
    took, outcome = attach_outcome(address)
    return {"guesser": guesses, "attach_s": took, "outcome": outcome}


def summary(values) -> str:
    return f"median {statistics.median(values):.3f}, range {min(values):.3f}-{max(values):.3f}"


def main_guessing(args) -> None:
    trees = {"this checkout": None}
    if args.compare_tree:
        trees[f"tree {args.compare_tree}"] = os.path.abspath(args.compare_tree)
    rounds: dict[str, list[dict]] = {name: [] for name in trees}
    aimed: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as folder:
        debuggees = {name: start_debuggee(folder, tree) for name, tree in trees.items()}
        try:
            for _, address, _ in debuggees.values():
                attach_time(address)   # pydevd's import, once, outside the figures
            for _ in range(args.reps):
                for name, (_, address, _) in debuggees.items():   # A B A B
                    rounds[name].append(guessing_round(address, users=args.guessers, seconds=args.seconds,
                                                       connections=args.connections))
                    time.sleep(9.0)   # every lockout of this round over (8 s at most)
                    if os.geteuid() == 0:
                        aimed[name].append(aimed_round(address))
                        time.sleep(9.0)
        finally:
            for process, _, _ in debuggees.values():
                process.kill()
                process.wait()
    users = args.guessers if os.geteuid() == 0 else 1
    print(f"{users} guessing users x {args.connections} connections, {args.seconds:g} s each round, "
          f"{args.reps} rounds per debuggee, A B A B")
    for name in trees:
        done = rounds[name]
        outcomes = sorted({r["outcome"] for r in done})
        print(f"{name}:\n  connections/s {summary([r['attempts_per_s'] for r in done])}"
              f"\n  secrets checked/s {summary([r['checked_per_s'] for r in done])}"
              f"\n  right secret during it: {summary([r['attach_s'] for r in done])} s; {outcomes}")
        if aimed[name]:
            print(f"  right secret from 127.0.0.1 after another user's guesses there: "
                  f"{summary([r['attach_s'] for r in aimed[name]])} s; "
                  f"{sorted({r['outcome'] for r in aimed[name]})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--guessers", type=int, default=0, help="guessing users (the guessing benchmark)")
    parser.add_argument("--connections", type=int, default=6, help="connections per guessing user")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each guessing round")
    parser.add_argument("--compare-tree", help="a second source tree to run the debuggee from (see above)")
    args = parser.parse_args()
    if args.guessers:
        main_guessing(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        process, address, _ = start_debuggee(folder)
        try:
            attach_time(address)   # pydevd's import, once, outside the figures
            quiet, flooded, held = [], [], []
            for _ in range(args.reps):
                quiet.append(attach_time(address))
                flood = open_flood(address, args.sockets)
                held.append(len(flood))
                time.sleep(0.5)   # every flood connection accepted and idle by now
                try:
                    flooded.append(attach_time(address))
                finally:
                    for sock in flood:
                        sock.close()
                time.sleep(0.5)
        finally:
            process.kill()
            process.wait()
    for name, values in (("no flood", quiet), (f"{args.sockets} idle sockets", flooded)):
        print(f"{name:>18}: median {statistics.median(values):.3f} s, range {min(values):.3f}-{max(values):.3f} s"
              f" ({len(values)} attaches)")
    print(f"flood connections that connected: {min(held)}-{max(held)} of {args.sockets}")


if __name__ == "__main__":
    main()

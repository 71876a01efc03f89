"""A secret guesser that rotates its loopback source address: what the listener's limits are for.

    python benchmarks/guess_secret.py HOST PORT [--seconds 5] [--connections 8] [--first-source 256]

Each of --connections threads, until --seconds have passed: binds a new source address in
127.0.0.0/8 (Linux routes all of it to lo), connects, sends `initialize` and an `attach` with
a wrong secret at once, and reads the answer. Connections still waiting at the end are
dropped, so only answers within the window count. Prints one JSON line: how many guesses
were checked ("wrong secret"), refused by a lockout or by the listener's guess budget, and
the window's start and end (time.time()). Standard library only: tests/test_guessing.py runs
it as other local users, and benchmarks/bench_flood.py --guessers measures with it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import threading
import time
import warnings


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


GUESS = frame({"seq": 1, "type": "request", "command": "initialize", "arguments": {"adapterID": "guesser"}}) + frame(
    {"seq": 2, "type": "request", "command": "attach", "arguments": {"name": "guess", "secret": "not-the-secret"}})


def source_address(index: int) -> str:
    """127.x.y.z, skipping 127.0.0.0/24 (127.0.0.1 is where real clients come from)."""
    index += 256
    return f"127.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255 or 1}"


def answers(sock: socket.socket, deadline: float):
    """The messages the listener sends, until it closes or the window ends."""
    buffer = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if not data:
            return
        buffer += data
        while b"\r\n\r\n" in buffer:
            head, rest = buffer.split(b"\r\n\r\n", 1)
            length = int(head.split(b":")[1])
            if len(rest) < length:
                break
            yield json.loads(rest[:length])
            buffer = rest[length:]


def classify(message: dict) -> str | None:
    text = message.get("message") or ""
    if "wrong secret" in text:
        return "checked"
    if "too many failed attempts" in text:
        return "locked_out"
    if "too many attempts to authenticate" in text:
        return "over_budget"
    if message.get("request_seq") == 2 or not message.get("success", True):
        return "other"
    return None


def guess(host: str, port: int, source: str, deadline: float, close_at_once: bool = False) -> str:
    sock = socket.socket()
    try:
        sock.bind((source, 0))
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.connect((host, port))
        sock.sendall(GUESS)
        if close_at_once:
            return "sent"
        for message in answers(sock, deadline):
            if message.get("type") == "response" and (outcome := classify(message)):
                return outcome
        return "unanswered"
    except TimeoutError:
        return "unanswered"
    except OSError:
        return "connection_error"
    finally:
        sock.close()


def run(host: str, port: int, *, seconds: float, connections: int, first_source: int = 0,
        fixed_source: str | None = None, close_at_once: bool = False) -> dict:
    """Guesses for `seconds` on `connections` threads; the counts of each outcome, the number
    of source addresses used, and the window (time.time() at its start and end). With
    `fixed_source`, every connection comes from that one address instead; `close_at_once`
    closes each connection as soon as its guess is sent (its answer is never read)."""
    counts: dict[str, int] = {}
    lock = threading.Lock()
    sources = itertools.count(first_source)
    started_wall, started = time.time(), time.monotonic()
    deadline = started + seconds

    def worker():
        while time.monotonic() < deadline:
            with lock:
                source = fixed_source or source_address(next(sources))
            outcome = guess(host, port, source, deadline, close_at_once)
            with lock:
                counts[outcome] = counts.get(outcome, 0) + 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {**counts, "sources": next(sources) - first_source, "start": started_wall,
            "end": started_wall + (time.monotonic() - started)}


def run_as_user(uid: int, host: str, port: int, **options) -> tuple[int, int]:
    """Forks a guesser that runs as local user `uid` (the caller must be root); returns its pid
    and the pipe its counts arrive on (see collect). Forked, not executed: the interpreter may
    live where that user cannot read."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # fork() with threads: the child only guesses
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, json.dumps(run(host, port, **options)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    return pid, read


def collect(pid: int, read: int) -> dict:
    """The counts of a guesser started by run_as_user, once it has finished."""
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        raise RuntimeError(f"the guesser {pid} failed (exit status {os.waitstatus_to_exitcode(status)})")
    return json.loads(data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--first-source", type=int, default=0, help="where this guesser's addresses start")
    options = parser.parse_args(argv)
    print(json.dumps(run(options.host, options.port, seconds=options.seconds, connections=options.connections,
                         first_source=options.first_source)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

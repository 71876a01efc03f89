"""What authentication and TLS cost, and what hostile input does to the debuggee.

    python benchmarks/bench_handshake.py handshake [--reps 30]
        Four debuggees (plain, secret, TLS, TLS + secret), each a real fastattach
        listener in front of the real pydevd. Timed per session: TCP connect (+ TLS) to
        our initialize response (the listener alone), and the whole session: that plus
        attach, initialized, configurationDone, disconnect (pydevd included). The four
        kinds are interleaved in random order in every repetition; reported: median and
        range per kind, the ratio of medians against plain, each debuggee's RSS before
        listen(), after listen(), and after all the sessions, and the cost of one
        secret comparison.

    python benchmarks/bench_handshake.py relay [--requests 300]
        Request round trips (threads, stackTrace) through the relay and the real pydevd
        while a client holds the program at a breakpoint, plain and with TLS + secret.

    python benchmarks/bench_handshake.py hostile [--cases 5000]
        One debuggee (TLS off, secret on) gets `cases` malformed or hostile connections
        (bad and huge Content-Length, truncated bodies, non-UTF-8, non-JSON, wrong types,
        unknown and out-of-order requests, floods, wrong secrets, clients vanishing
        before and after attaching). Reported: cases per kind, crashes (the debuggee
        died or stopped running, or the listener stopped serving a correct client),
        and the debuggee's RSS before and after.

Run with the venv's python (debugpy and fastattach installed). Needs `openssl` for TLS.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

from fastattach.net.client import DAPClient
from fastattach.net.wire import encode_message

SECRET = "bench-secret-0123456789"

DEBUGGEE = textwrap.dedent("""
    import json, os, sys, threading, time
    import psutil
    from fastattach.net.guessing import GuessLimiter
    from fastattach.net.security import FailureThrottle, server_ssl_context
    from fastattach.net.listener import Listener

    if os.environ.get("BENCH_LOG"):
        import logging
        logging.basicConfig(filename=os.environ["BENCH_LOG"], level=logging.INFO, format="%(message)s")
    me = psutil.Process()
    rss_before = me.memory_info().rss
    tls = os.environ.get("BENCH_CERT")
    listener = Listener("127.0.0.1", 0, secret=os.environ.get("BENCH_SECRET") or None,
                        ssl_context=server_ssl_context(tls, os.environ["BENCH_KEY"]) if tls else None,
                        # No lockout and no guess budget: every hostile case must reach the parser.
                        throttle=FailureThrottle(first_delay=0.0),
                        guess_limiter=GuessLimiter(rate=1e9, burst=10**9))
    rss_listening = me.memory_info().rss
    print(json.dumps({"port": listener.address[1], "rss_before": rss_before, "rss_listening": rss_listening}),
          flush=True)

    def work(n):
        return sum(i * i for i in range(n))  # RELAY-BREAKPOINT

    tick = 0
    for line in iter(sys.stdin.readline, ""):
        # One line in, one line out: the program answers only while it is running normally.
        work(1000)
        tick += 1
        print(json.dumps({"tick": tick, "rss": me.memory_info().rss}), flush=True)
""")


class Debuggee:
    def __init__(self, directory: str, *, secret: bool, tls: tuple[str, str] | None, log: str | None = None):
        path = os.path.join(directory, "bench_debuggee.py")
        with open(path, "w") as f:
            f.write(DEBUGGEE)
        env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1", BENCH_SECRET=SECRET if secret else "")
        if tls:
            env.update(BENCH_CERT=tls[0], BENCH_KEY=tls[1])
        if log:
            env.update(BENCH_LOG=log)
        self.secret = SECRET if secret else None
        self.tls = tls
        self.process = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-u", path], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        started = self._next(60)
        self.port = started["port"]
        self.rss_before, self.rss_listening = started["rss_before"], started["rss_listening"]

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def _next(self, timeout: float) -> dict:
        item = self._lines.get(timeout=timeout)
        if item is None:
            raise RuntimeError("the debuggee exited")
        return item

    def probe(self, timeout: float = 10) -> dict | None:
        """One round trip through the program's own work loop; None if it is not running."""
        try:
            self.process.stdin.write("\n")
            self.process.stdin.flush()
            return self._next(timeout)
        except (OSError, queue.Empty, RuntimeError):
            return None

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.tls[0]) if self.tls else None

    def handshake(self) -> tuple[float, float]:
        """(seconds to our initialize response, seconds for the whole session)."""
        start = time.perf_counter()
        client = DAPClient.connect("127.0.0.1", self.port, ssl_context=self.ssl_context())
        try:
            client.initialize()
            initialized = time.perf_counter()
            arguments = {"secret": self.secret} if self.secret else {}
            client.attach(**arguments)
            client.request("disconnect", {"restart": False})
        finally:
            client.close()
        return initialized - start, time.perf_counter() - start

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def make_certificate(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "bench.crt"), os.path.join(directory, "bench.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=bench", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    return cert, key


def mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def run_handshake(reps: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        tls = make_certificate(directory)
        kinds = {"plain": dict(secret=False, tls=None), "secret": dict(secret=True, tls=None),
                 "TLS": dict(secret=False, tls=tls), "TLS + secret": dict(secret=True, tls=tls)}
        debuggees = {}
        try:
            for name, options in kinds.items():
                debuggees[name] = Debuggee(directory, **options)
            for debuggee in debuggees.values():
                debuggee.handshake()  # the first one starts pydevd: measured separately by the core benchmarks
            times = {name: [] for name in kinds}
            order = list(kinds)
            rng = random.Random(5)
            for _ in range(reps):
                rng.shuffle(order)
                for name in order:
                    times[name].append(debuggees[name].handshake())
            print(f"{reps} interleaved repetitions, Python {sys.version.split()[0]}; ms: median (min-max), "
                  f"ratio of medians vs plain")
            print(f"{'kind':<14}{'connect+initialize':>26}{'':>8}{'whole session':>26}{'':>8}"
                  f"{'RSS before':>12}{'listening':>11}{'after':>8}  (MB)")
            base = [statistics.median(t[i] for t in times["plain"]) for i in (0, 1)]
            for name in kinds:
                cells = []
                for i in (0, 1):
                    values = sorted(t[i] * 1e3 for t in times[name])
                    median = statistics.median(values)
                    cells.append(f"{median:>9.2f} ({values[0]:.2f}-{values[-1]:.2f})".rjust(26)
                                 + f"{median / (base[i] * 1e3):>7.2f}x")
                d = debuggees[name]
                rss_after = d.probe()["rss"]
                print(f"{name:<14}{cells[0]}{cells[1]}{mb(d.rss_before):>12}{mb(d.rss_listening):>11}"
                      f"{mb(rss_after):>8}")
            from fastattach.net.security import secrets_match
            loops = 100_000
            start = time.perf_counter()
            for _ in range(loops):
                secrets_match(SECRET, "a-wrong-guess-of-some-length")
            print(f"secret check: {(time.perf_counter() - start) / loops * 1e6:.2f} us per comparison")
        finally:
            for debuggee in debuggees.values():
                debuggee.stop()


# -- hostile input ---------------------------------------------------------------------------------
def _frame(obj) -> bytes:
    return encode_message(obj) if isinstance(obj, dict) else b"Content-Length: %d\r\n\r\n" % len(obj) + obj


def _init(seq=1) -> bytes:
    return _frame({"seq": seq, "type": "request", "command": "initialize", "arguments": {}})


def hostile_inputs(rng: random.Random):
    """(kind, bytes to send, vanish early) for one malformed connection."""
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    kinds = {
        "bad Content-Length": lambda: b"Content-Length: " + rng.choice([b"-1", b"abc", b"1e9", b"", b"0x10",
                                                                         b"99999999999999"]) + b"\r\n\r\n{}",
        "huge Content-Length": lambda: b"Content-Length: %d\r\n\r\n" % rng.randrange(65 * 1024, 2**40),
        "truncated body": lambda: b"Content-Length: 500\r\n\r\n" + _init()[-40:],
        "non-UTF-8 body": lambda: _frame(b"\xff\xfe" + junk),
        "non-JSON body": lambda: _frame(b"{seq: 1, type: request" + junk.replace(b"}", b"")),
        "random bytes": lambda: junk,
        "wrong types": lambda: _frame(rng.choice([
            {"seq": "1", "type": "request", "command": "initialize"},
            {"seq": 1, "type": "request", "command": 7},
            {"seq": 1, "type": "request", "command": "attach", "arguments": []},
            {"seq": -5, "type": "event", "event": "x"},
            {"seq": 1, "type": "bogus"}])),
        "wrong secret types": lambda: _init() + _frame({"seq": 2, "type": "request", "command": "attach",
                                                        "arguments": {"secret": rng.choice([1, [], {}, None])}}),
        "unknown commands": lambda: _init() + b"".join(_frame({"seq": i, "type": "request", "command": f"x{i}"})
                                                       for i in range(2, 10)),
        "out-of-order requests": lambda: b"".join(_frame({"seq": i, "type": "request", "command": c})
                                                  for i, c in enumerate(["configurationDone", "threads",
                                                                         "attach"], 1)),
        "flood": lambda: b"".join(_init(i) for i in range(1, 5000)),
        "wrong secret": lambda: _init() + _frame({"seq": 2, "type": "request", "command": "attach",
                                                  "arguments": {"secret": junk.hex()}}),
        "deep JSON nesting": lambda: _frame(b"[" * 100000 + b"]" * 100000),
    }
    kind = rng.choice(list(kinds))
    return kind, kinds[kind](), rng.random() < 0.5


def send_hostile(port: int, data: bytes, vanish: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            if not vanish:
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(3)
                while sock.recv(65536):
                    pass
        except OSError:
            pass


def attached_client(debuggee: Debuggee, timeout: float = 20.0) -> DAPClient:
    """A correct client, retried while the listener still serves the previous (hostile) connection."""
    deadline = time.monotonic() + timeout
    while True:
        client = DAPClient.connect("127.0.0.1", debuggee.port)
        try:
            client.attach(secret=SECRET)
            return client
        except Exception as error:
            client.close()
            # Busy answers, or a bare close when too many refusals are already under way.
            busy = "already attached" in str(error) or "connection closed" in str(error)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def vanish_after_attach(debuggee: Debuggee) -> None:
    client = attached_client(debuggee)
    client.send_raw(b"Content-Length: 100\r\n\r\n{\"seq\":")  # half a message, then gone
    client.close()


def run_hostile(cases: int) -> None:
    rng = random.Random(669)
    with tempfile.TemporaryDirectory() as directory:
        log = os.path.join(directory, "debuggee.log")
        debuggee = Debuggee(directory, secret=True, tls=None, log=log)
        try:
            vanish_after_attach(debuggee)  # start pydevd first, so the RSS baseline includes it
            baseline = debuggee.probe()["rss"]
            counts: dict[str, int] = {}
            crashes = 0
            start = time.monotonic()
            for case in range(cases):
                if case % 50 == 49:
                    kind = "vanish after attach"
                    vanish_after_attach(debuggee)
                else:
                    kind, data, vanish = hostile_inputs(rng)
                    send_hostile(debuggee.port, data, vanish)
                    time.sleep(0.002)  # lets the listener notice a vanished client before the next case
                counts[kind] = counts.get(kind, 0) + 1
                if case % 100 == 99 and debuggee.probe() is None:
                    crashes += 1
                    break
            alive = debuggee.probe()
            if alive is None:
                crashes += 1
            try:
                attached_client(debuggee).disconnect()
                serving = True
            except Exception:
                serving = False
                crashes += 1
            after = debuggee.probe()["rss"] if alive else 0
            with open(log) as f:
                lines = f.read().splitlines()
            connected = sum("client connected from" in line for line in lines)
            refused_busy = sum("refused a connection" in line for line in lines)
            failures = sum("Traceback" in line or "failed;" in line for line in lines)
            print(f"hostile input: {sum(counts.values())} connections in {time.monotonic() - start:.0f} s, "
                  f"Python {sys.version.split()[0]}")
            for kind, count in sorted(counts.items()):
                print(f"  {kind:<24}{count:>6}")
            print(f"sessions the listener parsed: {connected}; connections refused as busy (the previous "
                  f"case not yet closed): {refused_busy}; relay exceptions logged: {failures}")
            print(f"crashes: {crashes} (debuggee running: {alive is not None}, listener serving a correct "
                  f"client afterwards: {serving})")
            print(f"debuggee RSS: {mb(baseline)} MB before, {mb(after)} MB after")
        finally:
            debuggee.stop()


def run_relay(requests: int) -> None:
    """Request round trips through the relay while a client holds the program at a breakpoint."""
    with tempfile.TemporaryDirectory() as directory:
        tls = make_certificate(directory)
        script = os.path.join(directory, "bench_debuggee.py")
        lines = DEBUGGEE.splitlines()
        line = lines.index(next(text for text in lines if "RELAY-BREAKPOINT" in text)) + 1
        print(f"{requests} sequential requests per kind while stopped, Python {sys.version.split()[0]}; "
              f"ms: median (min-max)")
        for name, options in (("plain", dict(secret=False, tls=None)), ("TLS + secret", dict(secret=True, tls=tls))):
            debuggee = Debuggee(directory, **options)
            try:
                client = DAPClient.connect("127.0.0.1", debuggee.port, ssl_context=debuggee.ssl_context())
                client.attach(breakpoints={script: [{"line": line}]},
                              **({"secret": debuggee.secret} if debuggee.secret else {}))
                debuggee.process.stdin.write("\n")  # runs work() once: it stops there
                debuggee.process.stdin.flush()
                thread_id = client.wait_stopped(30)["threadId"]
                cells = []
                for command, arguments in (("threads", None),
                                           ("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 20})):
                    times = []
                    for _ in range(requests):
                        start = time.perf_counter()
                        client.request(command, arguments)
                        times.append((time.perf_counter() - start) * 1e3)
                    times.sort()
                    cells.append(f"{command} {statistics.median(times):.2f} ({times[0]:.2f}-{times[-1]:.2f})")
                print(f"  {name:<14}" + "   ".join(cells))
                client.disconnect()
            finally:
                debuggee.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("handshake").add_argument("--reps", type=int, default=30)
    sub.add_parser("hostile").add_argument("--cases", type=int, default=5000)
    sub.add_parser("relay").add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    if args.mode == "handshake":
        run_handshake(args.reps)
    elif args.mode == "relay":
        run_relay(args.requests)
    else:
        run_hostile(args.cases)


if __name__ == "__main__":
    main()

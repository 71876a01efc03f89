"""Budgets end to end: a real debuggee started by `python -m fastattach` with budget flags,
a real DAP client, the real pydevd.  Only counts and notices are asserted, never timing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from dap_schema import assert_valid

from fastattach.net.client import DAPClient

TARGET = textwrap.dedent("""
    import os, sys, time

    calls = []

    def hot(n):
        total = 0
        for i in range(n):
            total += i  # LOG
        return total

    def expensive(n):
        hits = 0
        for i in range(n):
            hits += 1  # COND
        return hits

    def rare(n):
        # A line whose condition holds once, at the end; C work between its runs (no line
        # events) keeps its condition's share of the time small on any machine.
        found = None
        for i in range(n):
            sum(range(1500))
            found = i  # RARE
        return found

    def wait_for(path):
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)

    mode, go = sys.argv[1], sys.argv[2]
    if mode == "log":
        t0 = time.monotonic()
        print("phase1", hot(1_000_000), "seconds", time.monotonic() - t0, flush=True)
        wait_for(go)
        t0 = time.monotonic()
        print("phase2", hot(1_000_000), "seconds", time.monotonic() - t0, flush=True)
    elif mode == "cond":
        t0 = time.monotonic()
        hits = expensive(2_000)
        print("expensive", hits, "evaluations", len(calls), "seconds", time.monotonic() - t0, flush=True)
    elif mode == "rare":
        t0 = time.monotonic()
        found = rare(40_000)
        print("rare", found, "seconds", time.monotonic() - t0, flush=True)
    time.sleep(60)
""")

LISTENING = re.compile(r"fastattach: listening on (\\S+):(\\d+)")


def marker(name: str) -> int:
    return next(n for n, text in enumerate(TARGET.splitlines(), 1) if text.rstrip().endswith(f"# {name}"))


class Debuggee:
    """`python -m fastattach --listen 127.0.0.1:0 --wait-for-client FLAGS target.py MODE GO`."""

    def __init__(self, tmp_path, mode: str, *flags: str):
        self.script = tmp_path / "budget_target.py"
        self.script.write_text(TARGET)
        self.go = tmp_path / "go"
        self.stdout_path, self.stderr_path = tmp_path / "out.txt", tmp_path / "err.txt"
        argv = [sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                "--wait-for-client", *flags, str(self.script), mode, str(self.go)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        self.client: DAPClient | None = None
        deadline = time.monotonic() + 30
        while not (match := re.search(r"fastattach: listening on (\S+):(\d+)", self.stderr())):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the debuggee did not listen:\n" + self.stderr())
            time.sleep(0.05)
        self.address = match.group(1), int(match.group(2))

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_stdout(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.stdout())):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"no {pattern!r} in the debuggee's output:\n{self.stdout()}\n{self.stderr()}")
            time.sleep(0.05)
        return match

    def connect(self) -> DAPClient:
        self.client = DAPClient.connect(*self.address)
        return self.client

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture
def debuggee(tmp_path):
    started = []

    def start(mode, *flags):
        started.append(Debuggee(tmp_path, mode, *flags))
        return started[-1]

    yield start
    for d in started:
        d.stop()


def logpoint_outputs(client, prefix: str) -> list[str]:
    return [e["body"]["output"] for e in client.events("output")
            if e["body"].get("category") == "stdout" and e["body"]["output"].startswith(prefix)]


def paused_notice(client, timeout=30.0):
    """The breakpoint event (changed, unverified) and the console output that announce a pause."""
    event = client.wait_event("breakpoint", timeout, lambda e: e["body"]["breakpoint"]["verified"] is False)
    output = client.wait_event("output", timeout, lambda e: "paused:" in e["body"]["output"])
    return event["body"], output["body"]["output"]


def test_runaway_logpoint_stays_within_its_budget_and_the_client_is_told(debuggee):
    d = debuggee("log", "--budget-cooldown", "600", "--condition-cpu", "0")   # the message budget decides
    client = d.connect()
    line = marker("LOG")
    path = str(d.script)
    result = client.attach(breakpoints={path: [{"line": line, "logMessage": "i={i}"}]})
    assert result[path][0]["verified"]
    # The loop ran its 1,000,000 iterations with an unchanged result.
    seconds = float(d.wait_stdout(r"phase1 499999500000 seconds (\S+)").group(1))
    body, text = paused_notice(client)
    assert body["reason"] == "changed" and body["breakpoint"]["id"] == result[path][0]["id"]
    assert body["breakpoint"]["line"] == line
    assert "more than 50 messages/s" in body["breakpoint"]["message"]
    assert "more than 50 messages/s" in text and "costs nothing" in text and "dropped 1" in text
    time.sleep(0.5)   # let any output still in flight arrive
    messages = logpoint_outputs(client, "i=")
    # Within budget: the bucket's 50, plus what it refilled (50/s) while the loop ran.
    assert 50 <= len(messages) <= 50 + 50 * seconds + 1, (len(messages), seconds)
    assert messages[:3] == ["i=0\n", "i=1\n", "i=2\n"]

    # Changing the breakpoint gives it a fresh budget: it runs again, and pauses again.
    changed = client.set_breakpoints(path, [{"line": line, "logMessage": "j={i}"}])
    assert changed[0]["verified"]
    d.go.touch()
    seconds = float(d.wait_stdout(r"phase2 499999500000 seconds (\S+)").group(1))
    paused_notice(client)
    time.sleep(0.5)
    again = logpoint_outputs(client, "j=")
    assert 50 <= len(again) <= 50 + 50 * seconds + 1 and again[0] == "j=0\n"
    assert_valid(client.transcript)


def test_logpoint_resumes_after_the_cooldown_with_a_summary(debuggee):
    d = debuggee("log", "--budget-cooldown", "2", "--logpoint-rate", "20", "--condition-cpu", "0")
    client = d.connect()
    path = str(d.script)
    client.attach(breakpoints={path: [{"line": marker("LOG"), "logMessage": "i={i}"}]})
    seconds = float(d.wait_stdout(r"phase1 \d+ seconds (\S+)").group(1))
    body, _ = paused_notice(client)
    assert "more than 20 messages/s" in body["breakpoint"]["message"]
    resumed = client.wait_event("breakpoint", 30, lambda e: e["body"]["breakpoint"]["verified"] is True)
    assert "resumed" in resumed["body"]["breakpoint"]["message"]
    summary = client.wait_event("output", 30, lambda e: "resumed after" in e["body"]["output"])["body"]["output"]
    assert re.search(r"Dropped: \d+ hits refused by its budget", summary)
    assert re.search(r"Totals: \d+ hits, 20 output", summary)
    first = logpoint_outputs(client, "i=")
    assert 20 <= len(first) <= 20 + 20 * seconds + 1
    d.go.touch()
    seconds = float(d.wait_stdout(r"phase2 \d+ seconds (\S+)").group(1))
    paused_notice(client)
    time.sleep(0.5)
    # The resumed breakpoint logged again, within its budget.
    assert 20 <= len(logpoint_outputs(client, "i=")) <= 20 + 20 * seconds + 1


def test_conditional_and_hit_counted_logpoints_keep_pydevd_semantics(debuggee):
    # The time budget is off here (it is wall time, so a busy machine would change where it
    # trips); the message budget (50/s) decides, since no count caps the condition.
    d = debuggee("log", "--budget-cooldown", "600", "--condition-cpu", "0")
    client = d.connect()
    path = str(d.script)
    line = marker("LOG")
    client.attach(breakpoints={path: [{"line": line, "logMessage": "c={i}", "condition": "i % 1000 == 0"}]})
    seconds = float(d.wait_stdout(r"phase1 \d+ seconds (\S+)").group(1))
    # The condition runs on every one of the 1,000,000 hits without a count cap; 1000 of
    # them hold, and the message budget trips.
    body, _ = paused_notice(client)
    assert "more than 50 messages/s" in body["breakpoint"]["message"]
    time.sleep(0.5)
    messages = logpoint_outputs(client, "c=")
    assert messages[:3] == ["c=0\n", "c=1000\n", "c=2000\n"] and 50 <= len(messages) <= 50 + 50 * seconds + 1
    assert messages == [f"c={1000 * k}\n" for k in range(len(messages))]
    # A hit condition counts with pydevd's own counter: "%250" logs hits 250, 500, ... (i = 249, 499, ...).
    client.set_breakpoints(path, [{"line": line, "logMessage": "h={i}", "hitCondition": "%250"}])
    d.go.touch()
    seconds = float(d.wait_stdout(r"phase2 \d+ seconds (\S+)").group(1))
    paused_notice(client)
    time.sleep(0.5)
    messages = logpoint_outputs(client, "h=")
    assert 3 <= len(messages) <= 50 + 50 * seconds + 1
    assert messages == [f"h={250 * k - 1}\n" for k in range(1, len(messages) + 1)]


def test_logpoint_byte_budget(debuggee):
    d = debuggee("log", "--budget-cooldown", "600", "--logpoint-bytes", "1000", "--condition-cpu", "0")
    client = d.connect()
    path = str(d.script)
    # Each message is 100 characters of padding, the index and a newline.
    client.attach(breakpoints={path: [{"line": marker("LOG"), "logMessage": "{'x' * 100}{i}"}]})
    seconds = float(d.wait_stdout(r"phase1 \d+ seconds (\S+)").group(1))
    body, _ = paused_notice(client)
    assert "bytes/s" in body["breakpoint"]["message"]
    time.sleep(0.5)
    messages = logpoint_outputs(client, "x" * 100)
    # 1000 bytes plus the refill, plus the one message (<= 110 bytes) that overdrew it.
    assert len(messages) >= 9 and sum(len(m) for m in messages) <= 1000 + 1000 * seconds + 110


def test_expensive_condition_is_paused_within_its_time_budget(debuggee):
    # The condition sleeps 1 ms and is never true; outside production mode the default
    # budget is 10% of one core, a bucket of 100 ms: about a hundred evaluations, then the
    # line is paused.
    d = debuggee("cond", "--budget-cooldown", "600")
    client = d.connect()
    path = str(d.script)
    condition = "(calls.append(1), __import__('time').sleep(0.001))[1] is not None"
    client.attach(breakpoints={path: [{"line": marker("COND"), "condition": condition}]})
    match = d.wait_stdout(r"expensive 2000 evaluations (\d+) seconds (\S+)")
    evaluations, seconds = int(match.group(1)), float(match.group(2))
    # Each evaluation costs at least 1 ms; the bucket holds 100 ms and refills 100 ms/s.
    assert 1 <= evaluations <= 100 + 100 * seconds + 1, (evaluations, seconds)
    body, text = paused_notice(client)
    assert "more than 10% of one core" in body["breakpoint"]["message"] and "10% of one core" in text
    assert not client.events("stopped")


def test_cheap_condition_on_a_hot_line_stays_armed_and_its_rare_true_case_stops(debuggee):
    """The budget policy: no count cap on a condition C evaluates, and 10% of a core for its
    time outside production mode.  The line runs 40,000 times in well under a few seconds,
    and all its evaluations together cost some tens of ms, within the 100 ms the time
    bucket starts with; the old policy (5,000 evaluations/s, 1% of a core: a 10 ms bucket)
    paused it before the one true case, which then never stopped."""
    d = debuggee("rare", "--budget-cooldown", "600")
    client = d.connect()
    path = str(d.script)
    result = client.attach(breakpoints={path: [{"line": marker("RARE"), "condition": "i == 39_999"}]})
    assert result[path][0]["verified"]
    stopped = client.wait_stopped(120)
    assert stopped["reason"] == "breakpoint"
    frame = client.top_frame(stopped["threadId"])
    assert frame["line"] == marker("RARE") and frame["name"] == "rare"
    assert client.evaluate("i", frame["id"]) == "39999"
    assert not [e for e in client.events("breakpoint") if e["body"]["breakpoint"]["verified"] is False]
    assert not [e for e in client.events("output") if "paused:" in e["body"]["output"]]
    client.set_breakpoints(path, [])
    client.request("continue", {"threadId": stopped["threadId"]})
    d.wait_stdout(r"rare 39999 seconds ")
    assert_valid(client.transcript)


def test_condition_evaluation_rate_budget_covers_pydevd_evaluated_hit_conditions(debuggee):
    # A hit condition is pydevd's to evaluate (it counts hits); the rate budget still applies.
    d = debuggee("cond", "--budget-cooldown", "600", "--pydevd-condition-rate", "100", "--condition-cpu", "0")
    client = d.connect()
    path = str(d.script)
    client.attach(breakpoints={path: [{"line": marker("COND"), "hitCondition": "> 100000"}]})
    d.wait_stdout(r"expensive 2000 ")
    body, _ = paused_notice(client)
    assert "more than 100 condition evaluations/s" in body["breakpoint"]["message"]
    assert not client.events("stopped")


def test_ordinary_breakpoints_still_stop(debuggee):
    """Budgets leave a plain breakpoint alone: it suspends, and continue works."""
    d = debuggee("cond")
    client = d.connect()
    path = str(d.script)
    client.attach(breakpoints={path: [{"line": marker("COND")}]})
    stopped = client.wait_stopped(30)
    assert stopped["reason"] == "breakpoint"
    client.set_breakpoints(path, [])
    client.request("continue", {"threadId": stopped["threadId"]})
    d.wait_stdout(r"expensive 2000 ")


def test_cli_rejects_bad_budget_values(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0",
                             "--logpoint-rate", "-5", "-c", "pass"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "logpoint_messages_per_second" in result.stderr

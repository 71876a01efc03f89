"""Guessing the secret stays slow whatever the source address, and cannot lock out someone else.

Linux routes all of 127.0.0.0/8 to lo, so a local guesser can give every connection a new
source address (benchmarks/guess_secret.py does). Failed secrets are counted per principal
(the local user owning the connecting socket, for loopback), and every listener checks at
most a few secrets per second whoever sends them, the fewest-failures principal first
(docs/security.md, "Guessing the secret"). Real sockets and a real listener; other local
users are forked children that setuid, so the test needs root for that part.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import socket
import time

import pytest
from conftest import wait_until
from test_server import clients, fake, make_listener  # noqa: F401  (fixtures)

from fastattach.net.guessing import GUESS_BURST, GUESSES_PER_SECOND, GuessLimiter
from fastattach.net.security import FailureThrottle

SECRET = "guessing-test-secret-0123456789"
GUESSER_PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "guess_secret.py"
_spec = importlib.util.spec_from_file_location("guess_secret", GUESSER_PATH)
guesser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guesser)

# Local users no account has on a test machine (root may setuid to any number).
GUESSING_UIDS = range(47001, 47007)


def lockout_bound(throttle: FailureThrottle, seconds: float) -> int:
    """The most failures one principal can have in `seconds`: each waits out the lockout the
    previous one earned."""
    failures, elapsed = 1, 0.0
    while elapsed + throttle.delay_for(failures) <= seconds:
        elapsed += throttle.delay_for(failures)
        failures += 1
    return failures


def test_rotating_loopback_source_addresses_count_as_one_local_user(make_listener):  # noqa: F811
    throttle = FailureThrottle()
    listener = make_listener(secret=SECRET, throttle=throttle)
    # GIVEN a guesser giving each of its connections a new 127.0.x.y source address
    counts = guesser.run(*listener.address, seconds=3.0, connections=8)
    window = counts["end"] - counts["start"]
    # THEN every address counted against the one local user it runs as: its guesses waited
    # out that user's growing lockout, and the rest were refused without a check
    assert counts["sources"] > 20, counts
    me = f"uid {os.getuid()}"
    assert throttle.failures(me) == counts.get("checked", 0) <= lockout_bound(throttle, window), counts
    assert counts.get("locked_out", 0) > 0, counts


def test_a_guesser_that_closes_at_once_is_not_taken_for_root(make_listener):  # noqa: F811
    throttle = FailureThrottle(first_delay=0.0)   # no lockout: every guess is checked
    listener = make_listener(secret=SECRET, throttle=throttle)
    # GIVEN guesses whose connections close as soon as the guess is sent: what the kernel
    # keeps of such a socket (TIME_WAIT, FIN_WAIT2) says uid 0, whoever owned it
    options = dict(seconds=1.0, connections=4, close_at_once=True)
    if os.geteuid() == 0:   # then the guesser must be someone else, or root would be right
        counts = guesser.collect(*guesser.run_as_user(GUESSING_UIDS[0], *listener.address, **options))
    else:
        counts = guesser.run(*listener.address, **options)
    assert counts.get("sent", 0) > 10, counts
    wait_until(lambda: listener.guess_limiter.checks >= min(counts["sent"], GUESS_BURST),
               what="the guesses to be checked")
    # THEN none of their failures is counted against root
    assert throttle.failures("uid 0") == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as other local users needs root (setuid)")
def test_many_guessing_users_get_the_listener_budget_and_the_right_secret_gets_in(
        make_listener, clients, fake):  # noqa: F811
    limiter = GuessLimiter()
    listener = make_listener(secret=SECRET, guess_limiter=limiter)
    # GIVEN six other local users guessing at once, each rotating its source addresses
    guessers = [guesser.run_as_user(uid, *listener.address, seconds=5.0, connections=6, first_source=k * 100_000)
                for k, uid in enumerate(GUESSING_UIDS)]
    try:
        time.sleep(2.0)   # the budget is spent and guesses wait in line
        # WHEN a client with the right secret (another user: this one) attaches meanwhile
        checks_before = limiter.checks
        started = time.perf_counter()
        client = clients(listener)
        client.attach(secret=SECRET)
        took = time.perf_counter() - started
        checks_meanwhile = limiter.checks - checks_before
        print(f"\nthe right secret got in after {took:.3f} s while {len(GUESSING_UIDS)} users guessed")
        # THEN it is attached, and was checked next: at most a check already under way and one
        # granted before its attach arrived went first, not the line of waiting guesses
        assert client.request("threads")["success"]
        assert fake.opened == 1
        assert checks_meanwhile <= 3, checks_meanwhile
    finally:
        results = [guesser.collect(pid, read) for pid, read in guessers]
    # AND all the users together got no more checks than the one listener's budget
    checked = sum(result.get("checked", 0) for result in results)
    attempts = sum(result["sources"] for result in results)
    window = max(r["end"] for r in results) - min(r["start"] for r in results)
    assert checked <= GUESS_BURST + GUESSES_PER_SECOND * window + 1, results
    assert attempts > 2 * checked, results   # the flood was far larger than what got checked


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another local user needs root (setuid)")
def test_another_user_guessing_from_127_0_0_1_does_not_lock_out_its_users(make_listener, clients, fake):  # noqa: F811
    throttle = FailureThrottle()
    listener = make_listener(secret=SECRET, throttle=throttle)
    # GIVEN another local user guessing from 127.0.0.1, where SSH tunnels arrive too, until it
    # is locked out
    pid, read = guesser.run_as_user(GUESSING_UIDS[0], *listener.address, seconds=2.0, connections=4,
                                    fixed_source="127.0.0.1")
    counts = guesser.collect(pid, read)
    assert counts.get("locked_out", 0) > 0, counts
    assert throttle.retry_after(f"uid {GUESSING_UIDS[0]}") > 0
    # WHEN a user of this uid comes through 127.0.0.1 with the right secret
    client = clients(listener)
    client.attach(secret=SECRET)
    # THEN it is attached: the lockout is the guesser's alone
    assert client.request("threads")["success"] and fake.opened == 1


def test_a_guess_that_hangs_up_while_waiting_leaves_the_line(make_listener):  # noqa: F811
    limiter = GuessLimiter(rate=0.001, burst=1)   # one check, then none for the length of the test
    listener = make_listener(secret=SECRET, guess_limiter=limiter)
    # GIVEN the budget spent, and a guess waiting in line for it
    guesser.run(*listener.address, seconds=0.5, connections=1)
    assert limiter.checks == 1
    waiting = socket.create_connection(listener.address)
    waiting.sendall(guesser.GUESS)
    wait_until(lambda: limiter.waiting == 1, what="the guess to wait in line")
    # WHEN its connection closes
    waiting.close()
    # THEN it leaves the line, long before its attach deadline
    wait_until(lambda: limiter.waiting == 0, timeout=5, what="the closed connection to leave the line")
    assert limiter.checks == 1

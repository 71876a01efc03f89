"""A program gevent has monkey-patched: a patched threading.Thread (a greenlet), a
gevent.spawn greenlet and the main greenlet each run a marked line.

With ``--patch-first WAITFILE`` it patches at once, says "patched" and waits (in gevent's
sleep, so the hub runs) until WAITFILE exists: the client then attaches to a program that
is patched already. Without it, it patches after the client attached (``--wait-for-client``).
"""

import sys

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import threading  # noqa: E402

import gevent  # noqa: E402

if sys.argv[1:2] == ["--patch-first"]:
    print("patched", flush=True)
    while not os.path.exists(sys.argv[2]):
        gevent.sleep(0.05)

results = []


def in_thread(n):
    results.append(("thread", n * 2))  # MARK-THREAD


def in_greenlet(n):
    results.append(("greenlet", n * 3))  # MARK-GREENLET


worker = threading.Thread(target=in_thread, args=(1,))
worker.start()
worker.join()
gevent.spawn(in_greenlet, 2).join()
results.append(("main", 4))  # MARK-MAIN
print("results", sorted(results), flush=True)
print("done", flush=True)

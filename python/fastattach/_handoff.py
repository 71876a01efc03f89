"""Prompt GIL hand-offs while fastattach starts up and while a client is attached.

Standard library only: safe_attach_loader.py runs this file before the package is
importable, and the listener and the relay use it from inside the package.
"""

import sys

# While we start up, and while a client is attached, a thread waiting for the GIL asks for
# it after this long (seconds); the process's own switch interval is 0.005 unless the
# application changed it.
STARTUP_SWITCH_INTERVAL = 0.00001


class prompt_gil_handoffs:
    """For the length of a ``with`` block, a thread waiting for the GIL asks for it after
    STARTUP_SWITCH_INTERVAL instead of the process's switch interval. Used around the
    loader's imports and around each authenticated client session (``net/relay.py``).

    Why: a waiting thread asks the holder to drop the GIL only after a whole switch interval
    with no switch in between. Beside an application thread that runs Python without
    pause, every blocking call of ours (each import makes several: stat, open, read, close;
    pydevd's threads block on their sockets) costs a whole interval, and if that thread also
    releases and retakes the GIL more often than that (a loop that does a little I/O), we are
    starved outright. docs/attach.md ("GIL hand-offs") gives the measurements; the
    application's CPU-bound threads run as fast with the short interval
    (benchmarks/bench_gil_handoffs.py). The application gets its own interval back when the
    block ends.

    An attach's bootstrap shortens the interval before the loader's thread runs at all (it
    runs on a thread that holds the GIL already) and passes the value it found; the loader
    gives that as ``shortened_from`` and puts it back at the end.

    Nested or overlapping uses are safe: one that finds the interval already this short
    leaves it alone, and the saved value is put back only if nobody changed it meanwhile."""

    def __init__(self, shortened_from=None):
        # The interval an attach's bootstrap found before it shortened it for us (it runs
        # first, on a thread that already holds the GIL), or None.
        self._shortened_from = shortened_from

    def __enter__(self):
        current = sys.getswitchinterval()
        if self._shortened_from is not None and self._shortened_from > current:
            self._saved, self._ours = self._shortened_from, current
            return self
        self._saved = current
        self._ours = None
        if self._saved > STARTUP_SWITCH_INTERVAL:
            sys.setswitchinterval(STARTUP_SWITCH_INTERVAL)
            # Read back: the interval is kept in whole microseconds, so it may not compare
            # equal to the float we gave.
            self._ours = sys.getswitchinterval()
        return self

    def __exit__(self, *exc_info):
        if self._ours is not None and sys.getswitchinterval() == self._ours:
            sys.setswitchinterval(self._saved)
        return False

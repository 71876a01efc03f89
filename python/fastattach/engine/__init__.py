"""Everything in the debuggee that touches pydevd or sys.monitoring.

Runs inside sys.monitoring callbacks on the application's threads, where nothing may raise
or block. Never imports net/ or the public API: it gets its options and a
``notify(event, body)`` callable from the session's owner (_api._Process).
host.py owns one pydevd; seam.py holds every patch to it; gate.py the C trampolines'
decisions; budgets.py and production.py the probes. Importing this package imports nothing.
"""

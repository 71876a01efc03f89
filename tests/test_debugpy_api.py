"""debugpy's API as a program written for debugpy calls it, run in subprocesses under
fastattach and under debugpy: wait_for_client.cancel(), configure() with debugpy's names,
log_to(), trace_this_thread() and debug_this_thread()."""

from __future__ import annotations

import glob
import subprocess
import sys
import textwrap

import pytest
from _e2e import kill_if_running

from fastattach.net.client import DAPClient


def run_program(source: str, timeout=120):
    proc = subprocess.run([sys.executable, "-Xfrozen_modules=off", "-c", textwrap.dedent(source)],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("module", ["fastattach", "debugpy"])
def test_wait_for_client_cancel_from_another_thread_ends_the_wait(module):
    status, out, err = run_program(f"""
        import threading, time
        import {module} as debugger
        try:
            debugger.wait_for_client.cancel()
        except RuntimeError as exc:
            print("before any wait:", exc)
        debugger.listen(("127.0.0.1", 0))
        threading.Timer(0.5, debugger.wait_for_client.cancel).start()
        start = time.monotonic()
        result = debugger.wait_for_client()
        print("returned", result, "after", "<20s" if time.monotonic() - start < 20 else ">=20s")
    """)
    assert status == 0, err
    # debugpy's wait_for_client() returns None; ours returns False (no client), as with a timeout.
    returned = {"fastattach": "False", "debugpy": "None"}[module]
    assert out.splitlines() == ["before any wait: wait_for_client() must be called first",
                                f"returned {returned} after <20s"]


def test_wait_for_client_still_returns_true_for_a_client_and_false_on_timeout():
    proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-c", textwrap.dedent("""
        import sys, fastattach
        print(fastattach.listen(("127.0.0.1", 0))[1], file=sys.stderr, flush=True)
        print("timeout", fastattach.wait_for_client(timeout=0.2), flush=True)
        print("client", fastattach.wait_for_client(), flush=True)
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stderr.readline())
        assert proc.stdout.readline() == "timeout False\n"
        client = DAPClient.connect("127.0.0.1", port)
        client.attach()
        client.disconnect()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0 and out == "client True\n", err


# (call, fastattach's outcome, debugpy 1.8.22's outcome): "ok", or the ValueError's text must
# contain the given words. Where they differ, fastattach cannot do what the value asks.
CONFIGURE_CALLS = [
    ("configure(subProcess=False)", "ok", "ok"),
    ("configure({'qt': 'none'})", "ok", "ok"),
    ("configure({'qt': 'none'}, subProcess=False)", "ok", "ok"),
    ("configure(qt='auto')", "qt must be 'none'", "ok"),
    ("configure(subProcess=True)", "ok", "ok"),
    ("configure(python=sys.executable)", "python is not supported", "ok"),
    ("configure(pythonEnv={})", "pythonEnv is not supported", "ok"),
    ("configure(pythonArgs=[])", "pythonArgs is not supported", "Unknown property 'pythonArgs'"),
    ("configure(nonsense=1)", "unknown fastattach option 'nonsense'", "Unknown property 'nonsense'"),
    ("configure(subProcess='false')", "subProcess must be True or False", "'subProcess' must be a bool"),
]


@pytest.mark.parametrize("module", ["fastattach", "debugpy"])
def test_configure_with_debugpys_option_names(module):
    calls = [call for call, _, _ in CONFIGURE_CALLS]
    status, out, err = run_program(f"""
        import sys
        import {module} as debugger
        for call in {calls!r}:
            try:
                eval("debugger." + call)
                print("ok")
            except ValueError as exc:
                print("ValueError", exc)
    """)
    assert status == 0, err
    column = 1 if module == "fastattach" else 2
    for line, case in zip(out.splitlines(), CONFIGURE_CALLS, strict=True):
        expected = case[column]
        assert line == "ok" if expected == "ok" else line.startswith("ValueError") and expected in line, (case, line)


def test_log_to_and_thread_calls_without_a_session_are_no_ops(tmp_path):
    status, out, err = run_program(f"""
        import sys, fastattach
        from fastattach import _api
        for when in ("not listening", "listening, no client"):
            fastattach.trace_this_thread(False)
            fastattach.trace_this_thread(True)
            fastattach.debug_this_thread()
            print(when, "ok")
            if not _api.listening_address():
                fastattach.listen(("127.0.0.1", 0))
        fastattach.log_to({str(tmp_path)!r})
        fastattach.log_to(sys.stderr)
        print(_api.get_option("log_dir"), _api.get_option("log_to_stderr"))
        print(sorted(name for name in sys.modules if name.startswith(("debugpy", "pydevd"))))
    """)
    assert status == 0, err
    assert out.splitlines() == ["not listening ok", "listening, no client ok", f"{tmp_path} True", "[]"]


def test_thread_calls_under_a_session_keep_breakpoints_and_log_to_writes_logs(tmp_path):
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(f"""
        import _thread, sys, threading
        import fastattach

        def callee():
            value = 1  # MARK-CALLEE
            return value

        def raw_thread():
            fastattach.debug_this_thread()
            callee()
            done.set()

        fastattach.log_to({str(tmp_path / "logs")!r})
        print(fastattach.listen(("127.0.0.1", 0))[1], file=sys.stderr, flush=True)
        fastattach.wait_for_client()
        fastattach.trace_this_thread(False)
        fastattach.trace_this_thread(True)
        done = threading.Event()
        _thread.start_new_thread(raw_thread, ())   # a thread threading did not start
        print("finished", done.wait(60), flush=True)
    """))
    line = next(n for n, t in enumerate(program.read_text().splitlines(), 1) if "MARK-CALLEE" in t)
    proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", str(program)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stderr.readline())
        client = DAPClient.connect("127.0.0.1", port)
        client.attach({str(program): [{"line": line}]})
        stopped = client.wait_stopped(60)
        assert client.top_frame(stopped["threadId"])["line"] == line
        client.request("continue", {"threadId": stopped["threadId"]})
        client.disconnect()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0 and out == "finished True\n", err
    assert glob.glob(str(tmp_path / "logs" / "debugpy.server-*.log"))


@pytest.mark.parametrize("module", ["fastattach", "debugpy"])
def test_trace_this_thread_off_and_on_keeps_a_callees_breakpoint(module, tmp_path):
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(f"""
        import sys
        import {module} as debugger

        def callee():
            value = 1  # MARK-CALLEE
            return value

        def caller():
            debugger.trace_this_thread(False)
            debugger.trace_this_thread(True)
            callee()

        print(debugger.listen(("127.0.0.1", 0))[1], file=sys.stderr, flush=True)
        debugger.wait_for_client()
        caller()
        after = 2  # MARK-MODULE
        print("finished", flush=True)
    """))
    lines = program.read_text().splitlines()
    callee_line, module_line = (next(n for n, t in enumerate(lines, 1) if mark in t)
                                for mark in ("MARK-CALLEE", "MARK-MODULE"))
    proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", str(program)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stderr.readline())
        client = DAPClient.connect("127.0.0.1", port, timeout=30)
        client.attach({str(program): [{"line": callee_line}, {"line": module_line}]})
        stops = []
        for _ in range(2):
            stopped = client.wait_stopped(60)
            stops.append(client.top_frame(stopped["threadId"])["line"])
            client.request("continue", {"threadId": stopped["threadId"]})
        client.disconnect()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_if_running(proc)
    assert stops == [callee_line, module_line]
    assert proc.returncode == 0 and out == "finished\n", err

"""The oldest debugpy pyproject.toml accepts, from PyPI: the filter goes in front of it and a
breakpoint stops, exactly as with the debugpy the rest of the suite runs.

The release is installed once per Python into .venv/ (pip install --target, no
dependencies: debugpy has none) and put first on the debuggee's PYTHONPATH.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from fastattach.net.client import DAPClient

# The oldest release pyproject.toml's range allows; keep the two in step.
OLDEST_TESTED_DEBUGPY = "1.8.13"
REPO = pathlib.Path(__file__).resolve().parent.parent

DEBUGGEE = textwrap.dedent("""
    import sys, time
    import fastattach

    def work(i):
        doubled = i * 2  # BREAK
        return doubled

    host, port = fastattach.listen(("127.0.0.1", 0))
    print(port, flush=True)
    deadline = time.monotonic() + 120
    i = 0
    while time.monotonic() < deadline:
        work(i)
        i += 1
        time.sleep(0.001)
""")
# Evaluated in the stopped frame: which debugpy runs there, and whether the filter is in front of it.
PROBE = ("(__import__('debugpy').__version__, __import__('debugpy').__file__, "
         "__import__('fastattach._api', fromlist=['session']).session().gate is not None)")


@pytest.fixture(scope="module")
def oldest_debugpy() -> pathlib.Path:
    target = REPO / ".venv" / f"debugpy-{OLDEST_TESTED_DEBUGPY}-py{sys.version_info[0]}.{sys.version_info[1]}"
    if not (target / "debugpy" / "__init__.py").exists():
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                                 str(target), f"debugpy=={OLDEST_TESTED_DEBUGPY}"],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.skip(f"cannot install debugpy {OLDEST_TESTED_DEBUGPY} from PyPI: {result.stderr.strip()[-300:]}")
    return target


def test_oldest_accepted_debugpy_gets_the_filter_and_stops_at_a_breakpoint(oldest_debugpy, tmp_path):
    # GIVEN a program that listens, run with the oldest debugpy first on its path
    script = tmp_path / "debuggee.py"
    script.write_text(DEBUGGEE)
    line = next(n for n, text in enumerate(DEBUGGEE.splitlines(), 1) if text.rstrip().endswith("# BREAK"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(oldest_debugpy), os.environ.get("PYTHONPATH", "")]),
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    process = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-u", str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = int(process.stdout.readline())
        # WHEN a client sets a conditional breakpoint in its loop
        with DAPClient.connect("127.0.0.1", port) as client:
            client.attach(breakpoints={str(script): [{"line": line, "condition": "i % 50 == 7"}]})
            stopped = client.wait_stopped(60)
            frame = client.top_frame(stopped["threadId"])
            # THEN it stops there, under that debugpy, with the filter in front of pydevd
            assert frame["line"] == line and int(client.evaluate("i", frame["id"])) % 50 == 7
            version, path, filtered = ast.literal_eval(client.evaluate(PROBE, frame["id"]))
            assert version == OLDEST_TESTED_DEBUGPY and path.startswith(str(oldest_debugpy))
            assert filtered, "the breakpoint filter was not installed"
            client.set_breakpoints(str(script), [])
            client.request("continue", {"threadId": stopped["threadId"]})
            client.disconnect()
    finally:
        process.kill()
        _, stderr = process.communicate(timeout=30)
    assert "breakpoint filter not installed" not in stderr


def test_pyproject_accepts_the_oldest_tested_debugpy():
    text = (REPO / "pyproject.toml").read_text()
    assert f'"debugpy>={OLDEST_TESTED_DEBUGPY},<1.9"' in text
    assert f"debugpy>={OLDEST_TESTED_DEBUGPY},<1.9" in (REPO / "requirements-dev.txt").read_text()

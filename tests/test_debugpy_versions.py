"""fastattach with debugpys other than the one in the dev requirements.

- The oldest debugpy pyproject.toml accepts, from PyPI: the filter goes in front of it and a
  breakpoint stops, exactly as with the debugpy the rest of the suite runs. The release is
  installed once per Python into .venv/ (pip install --target, no dependencies: debugpy has
  none) and put first on the debuggee's PYTHONPATH.
- Debian sid's de-vendored debugpy: `python3-debugpy` without its bundled pydevd, and
  `python3-pydevd` as a package of its own, whose monitoring module differs from the one
  vendored in debugpy 1.8.22 by ~93 lines while both report pydevd 3.5.0. The filter is put
  in front of it from what that pydevd offers, not from a version number.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from _e2e import DebugServer, breakpoint_filter_stats, marker_line, wait_stop

from fastattach.net.client import DAPClient

# The oldest release pyproject.toml's range allows for this Python (the first with wheels for
# it: older ones install as pure Python and do not run on 3.14+); keep the two in step.
OLDEST_BY_PYTHON = {(3, 14): "1.8.17", (3, 15): "1.8.22"}
OLDEST_TESTED_DEBUGPY = OLDEST_BY_PYTHON.get(sys.version_info[:2], "1.8.13")
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
    import tomllib

    from packaging.requirements import Requirement

    dependencies = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"]]
    for (major, minor), oldest in [((3, 12), "1.8.13"), ((3, 13), "1.8.13"), *OLDEST_BY_PYTHON.items()]:
        environment = {"python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.0"}
        debugpy = [r for r in dependencies if r.name == "debugpy"
                   and (r.marker is None or r.marker.evaluate(environment))]
        assert [set(map(str, r.specifier)) for r in debugpy] == [{f">={oldest}", "<1.9"}], (major, minor)
    assert "debugpy>=1.8.13,<1.9" in (REPO / "requirements-dev.txt").read_text()


# -- Debian sid's python3-debugpy + python3-pydevd (in the chroot of scripts/sid-chroot.sh) --------

DEBIAN_DIST_PACKAGES = pathlib.Path("/usr/lib/python3/dist-packages")
DEBIAN_PYTHON = pathlib.Path("/usr/bin/python3")

DEBIAN_PROGRAM = textwrap.dedent("""
    import debugpy, pydevd

    def work(n):
        total = 0
        for i in range(n):
            total += i  # STOP HERE
        return total

    print("result", work(3), flush=True)
""")


def debian_debugpy_missing() -> str | None:
    if not (DEBIAN_DIST_PACKAGES / "debugpy").is_dir() or not (DEBIAN_DIST_PACKAGES / "pydevd.py").is_file():
        return ("Debian's de-vendored python3-debugpy and python3-pydevd are not installed here "
                "(the sid chroot of scripts/sid-chroot.sh has them)")
    version = subprocess.run([str(DEBIAN_PYTHON), "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
                             capture_output=True, text=True).stdout.strip()
    if version != f"{sys.version_info.major}.{sys.version_info.minor}":
        return f"Debian's python3-debugpy is for Python {version}, not this {sys.version_info[:2]}"
    return None


@pytest.fixture(scope="module")
def debian_python(tmp_path_factory) -> str:
    """A venv's python that sees Debian's dist-packages (debugpy, pydevd) and our wheel, nothing else."""
    missing = debian_debugpy_missing()
    if missing:
        pytest.skip(missing)
    venv = tmp_path_factory.mktemp("debian-debugpy") / "venv"
    subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True)
    wheels = tmp_path_factory.mktemp("wheel")
    # This interpreter has the build tools (requirements-dev.txt); the venv gets the wheel only.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            str(REPO), "-w", str(wheels)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("fastattach-*.whl")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                "-q", "--no-deps", str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return str(venv / "bin" / "python")


@pytest.mark.timeout(900)   # a venv, a wheel build and a debug session
def test_debian_devendored_debugpy_stops_with_the_filter_installed(debian_python, tmp_path):
    # GIVEN a program under fastattach in a venv whose debugpy and pydevd are Debian's
    script = tmp_path / "program.py"
    script.write_text(DEBIAN_PROGRAM)
    line = marker_line(script, "STOP HERE")
    with DebugServer("fastattach", script, out_dir=tmp_path / "out", python=debian_python,
                     env={"PYTHONPATH": ""}) as server, DAPClient.connect(*server.address) as client:
        # WHEN a client sets a breakpoint and the program reaches it
        client.attach(breakpoints={str(script): [{"line": line}]})
        stop = wait_stop(client, 30)
        # THEN it stops there, the debugger is Debian's, and the C filter sits in front of it
        assert (stop.line, stop.function) == (line, "work")
        for module in ("debugpy", "pydevd"):
            where = client.evaluate(f"{module}.__file__", stop.frame_id)
            assert where.startswith(repr(str(DEBIAN_DIST_PACKAGES))[:-1]), where
        assert breakpoint_filter_stats(client, stop.frame_id) is not None, server.output()
        client.set_breakpoints(str(script), [])
        client.request("continue", {"threadId": stop.thread_id})
        assert server.wait(30) == 0
    assert "result 3" in server.stdout()
    assert "not installed" not in server.stderr(), server.stderr()

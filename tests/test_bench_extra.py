"""The benchmark command's dependencies are an optional extra, fastattach[bench].

Installed without it (`pip install fastattach`), `python -m fastattach.bench` must say so
in one line that names the extra and every package the chosen run needs, and measure
nothing.  The same command with the extra installed is test_bench_quick.py's quick run.

The interpreter without the extra is a real venv with a real fastattach wheel and the
runtime dependencies only, kept in .venv/ per Python version; it is made again when
those dependencies change, and the wheel is reinstalled when fastattach's sources do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
VENV_WITHOUT_EXTRA = REPO_ROOT / ".venv" / f"bench-without-extra-{PYTHON_VERSION}"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
INSTALL_COMMAND = "pip install 'fastattach[bench]'"

# Making the venv (pip reaches the package index) and building the wheel (the C extension
# compiles on a fresh checkout) take longer than one test's default timeout.
pytestmark = pytest.mark.timeout(900)

# What goes into the wheel, so that a change to any of it reinstalls fastattach.
WHEEL_SOURCES = ("python/fastattach", "src", "CMakeLists.txt", "pyproject.toml")


def sources_fingerprint() -> str:
    digest = hashlib.sha256()
    for source in WHEEL_SOURCES:
        root = REPO_ROOT / source
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".so":
                digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def clean_environment() -> dict[str, str]:
    """This environment without what would let another interpreter see this one's packages."""
    return {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def python_without_extra(tmp_path_factory) -> str:
    """A venv's python with fastattach and its runtime dependencies, and nothing else."""
    python = VENV_WITHOUT_EXTRA / "bin" / "python"
    runtime_dependencies = PYPROJECT["project"]["dependencies"]   # debugpy==1.8.22, cffi
    dependencies_stamp = VENV_WITHOUT_EXTRA / "runtime-dependencies.json"
    fastattach_stamp = VENV_WITHOUT_EXTRA / "fastattach-sources.sha256"
    if not (python.exists() and dependencies_stamp.exists()
            and json.loads(dependencies_stamp.read_text()) == runtime_dependencies):
        run([sys.executable, "-m", "venv", "--clear", VENV_WITHOUT_EXTRA], env=clean_environment())
        run([python, "-m", "pip", "install", "-q", *runtime_dependencies], env=clean_environment())
        dependencies_stamp.write_text(json.dumps(runtime_dependencies))
    fingerprint = sources_fingerprint()
    if not fastattach_stamp.exists() or fastattach_stamp.read_text() != fingerprint:
        wheel_dir = tmp_path_factory.mktemp("wheel")
        # This interpreter has the build tools (requirements-dev.txt): no isolated build env to fetch.
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", REPO_ROOT,
             "-w", wheel_dir])
        (wheel,) = wheel_dir.glob("fastattach-*.whl")
        run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel], env=clean_environment())
        fastattach_stamp.write_text(fingerprint)
    return str(python)


def bench(python: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "fastattach.bench", *args], capture_output=True, text=True, cwd=cwd,
                          env=clean_environment(), timeout=120)


def user_script(directory: Path) -> Path:
    script = directory / "service.py"
    script.write_text(textwrap.dedent("""\
        def handle(request):
            return sum(request)


        if __name__ == "__main__":
            handle(range(10))
        """))
    return script


# Each run, and what it needs from the extra that the plain install lacks.
RUNS_AND_THEIR_MISSING_PACKAGES = {
    "quick": (["--quick"], "pyperformance, coverage, matplotlib, psutil"),
    "quick without coverage as a reference": (["--quick", "--references", "bdb"],
                                              "pyperformance, matplotlib, psutil"),
    "your own script, fastattach alone, speed only": (
        ["--quick", "--workload", "{script}", "--sections", "ratios", "--references", "bdb",
         "--modes", "fastattach"], "matplotlib"),
    "rebuilding a report": (["--report-only", "results.json"], "matplotlib"),
}


@pytest.mark.parametrize("run_name", RUNS_AND_THEIR_MISSING_PACKAGES)
def test_without_the_extra_one_line_names_it_and_every_missing_package(python_without_extra, tmp_path,
                                                                       run_name):
    arguments, missing = RUNS_AND_THEIR_MISSING_PACKAGES[run_name]
    script = user_script(tmp_path)
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    done = bench(python_without_extra, *(a.format(script=script) for a in arguments), cwd=work_dir)

    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"fastattach.bench needs {missing} (not installed): {INSTALL_COMMAND}"]
    # Nothing was measured: the default output folder (under the current directory for
    # an installed fastattach) was not even made.
    assert list(work_dir.iterdir()) == []


def test_an_interpreter_under_test_without_the_extra_is_named(python_without_extra, tmp_path):
    """This interpreter has the extra; the one to measure lacks the debuggees' part of it."""
    done = bench(sys.executable, "--quick", "--python", python_without_extra, "--out", str(tmp_path / "out"),
                 cwd=tmp_path)

    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"fastattach.bench needs pyperformance, coverage (not installed in {python_without_extra}): "
        f"{INSTALL_COMMAND} into each of those Pythons"]
    assert not (tmp_path / "out").exists()


def test_requirements_dev_installs_the_bench_extra_as_pyproject_declares_it():
    requirements = {line.strip() for line in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    extra = PYPROJECT["project"]["optional-dependencies"]["bench"]
    assert set(extra) <= requirements
    # Every package the command checks for at start is in the extra (or is fastattach's own).
    from fastattach.bench.dependencies import KNOWN_MODULES

    declared = {re.split(r"[=<>!~ ]", requirement)[0] for requirement in
                extra + PYPROJECT["project"]["dependencies"]} | {"fastattach"}
    assert set(KNOWN_MODULES) <= declared


def test_the_soak_compiles_the_asked_share_of_its_fresh_code_under_names_never_used_before(monkeypatch, tmp_path):
    from fastattach.bench import target

    names: list[str] = []

    def recording_compile(source, filename, mode):
        names.append(filename)
        return compile(source, filename, mode)

    monkeypatch.setattr(target, "compile", recording_compile, raising=False)
    for iteration in range(3):
        target.soak_iteration(lambda: None, lambda i: None, iteration, unique_names=4, name_folder=str(tmp_path))
    assert len(names) == len(set(names)) == 12
    assert all(name.startswith(str(tmp_path)) and name.endswith(".py") for name in names)

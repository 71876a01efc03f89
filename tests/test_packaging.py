"""`pip install .` works on this Python from a clean venv, with nothing of the dev requirements.

A real venv, a real pip: the build backend (scikit-build-core, cmake, ninja) comes into pip's
isolated build environment from the package index, the runtime dependencies from
pyproject.toml, and the installed fastattach must import its C extension, list this Python
among its classifiers, listen and stop, and its .pth file must start a child's session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Creating the venv, the isolated build and the C build take longer than one test's default.
pytestmark = pytest.mark.timeout(900)

CHECK = """
import importlib.metadata, sys
import fastattach, fastattach._fasttrace
version = f"{sys.version_info.major}.{sys.version_info.minor}"
classifiers = importlib.metadata.metadata("fastattach").get_all("Classifier")
assert f"Programming Language :: Python :: {version}" in classifiers, classifiers
assert fastattach.__file__.startswith(sys.prefix), fastattach.__file__   # not the checkout's
host, port = fastattach.listen(("127.0.0.1", 0))
assert port > 0 and not fastattach.is_client_connected()
fastattach.stop()
# fastattach-subprocess.pth: installed at the site-packages root, where a new interpreter with
# FASTATTACH_SUBPROCESS set reads it and registers with the parent's registry.
import os, subprocess, fastattach._subprocess as children
heard = []
registry = children.Registry(lambda child: heard.append(child) and False, host="127.0.0.1", grace_period=0,
                             entry=False)
child = subprocess.run([sys.executable, "-c", "import sys; print('fastattach._api' in sys.modules)"],
                       env={**os.environ, children.ENV: registry.environment_value}, capture_output=True, text=True)
registry.close()
assert child.stdout == "True\\n" and [c["pid"] for c in heard] != [], (child.stdout, child.stderr, heard)
print("ok", version, importlib.metadata.version("debugpy"))
"""


def test_pip_install_from_a_clean_venv_without_dev_requirements(tmp_path):
    venv = tmp_path / "venv"
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=environment)
    python = str(venv / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "-q", str(REPO_ROOT)], capture_output=True,
                               text=True, env=environment)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # The dev requirements' test tools are not there: this is a user's install.
    missing = subprocess.run([python, "-c", "import pytest"], capture_output=True, env=environment)
    assert missing.returncode != 0
    checked = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, env=environment,
                             cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"ok {sys.version_info.major}.{sys.version_info.minor} ")
    cli = subprocess.run([python, "-m", "fastattach", "--help"], capture_output=True, text=True, env=environment,
                         cwd=tmp_path)
    assert cli.returncode == 0 and "--listen" in cli.stdout, cli.stderr

"""safe_attach_loader.py on its own: the PTVS_* settings from the environment, as a launcher
that sets them (instead of our orchestrator's settings file) would use it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from fastattach.attach._orchestrator import default_loader_path

PROGRAM = """
import runpy, sys, time
runpy.run_path(sys.argv[1])  # run as the orchestrator's bootstrap does: the name is "<run_path>"
print("loaded", flush=True)
time.sleep(float(sys.argv[2]))
"""


def run_loader(tmp_path, env: dict, linger: float = 0.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, default_loader_path(), str(linger)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_environment_settings_start_a_listener_and_write_the_port_file(tmp_path):
    port_file = tmp_path / "port"
    log_file = tmp_path / "loader.log"
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, default_loader_path(), "30"],
                            env={**os.environ, "PTVS_DEBUG_HOST": "127.0.0.1", "PTVS_DEBUG_PORT": "0",
                                 "PTVS_DEBUG_PORT_FILE": str(port_file), "PTVS_DEBUG_LOG_FILE": str(log_file)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "loaded"
        port = int(port_file.read_text())
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert f"listening on 127.0.0.1:{port}" in log_file.read_text()
        assert not list(tmp_path.glob("port.*.tmp"))  # written atomically: no temporary left
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_verbose_by_default_and_silent_with_0(tmp_path):
    chatty = run_loader(tmp_path, {"PTVS_DEBUG_PORT": "0"})
    assert "fastattach loader" in chatty.stderr and "listening on 127.0.0.1:" in chatty.stderr
    quiet = run_loader(tmp_path, {"PTVS_DEBUG_PORT": "0", "PTVS_SAFE_ATTACH_LOADER_VERBOSE": "0"})
    assert quiet.returncode == 0 and "fastattach loader" not in quiet.stderr


def test_bind_failure_is_written_next_to_the_port_file(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        port_file = tmp_path / "port"
        result = run_loader(tmp_path, {"PTVS_DEBUG_PORT": str(busy_port), "PTVS_DEBUG_PORT_FILE": str(port_file),
                                       "PTVS_SAFE_ATTACH_LOADER_VERBOSE": "0"})
    # The program the loader ran in carried on (nothing was raised into it)
    assert result.returncode == 0 and "loaded" in result.stdout
    assert not port_file.exists()
    from fastattach._loader_contract import decode_fields
    error = decode_fields((tmp_path / "port.error").read_text())
    assert error["reason"] == "bind_failed"
    assert error["message"].startswith(f"port bind failed in the target: cannot listen on 127.0.0.1:{busy_port}: ")
    # errors are reported even when verbose logging is off
    assert "port bind failed in the target" in result.stderr


def test_sys_path_is_left_as_it_was(tmp_path):
    # (The package's parent is usually on sys.path already: the loader inserts it again in
    # front while it imports, and must take out exactly that copy.)
    program = ("import runpy, sys\nbefore = list(sys.path)\nrunpy.run_path(sys.argv[1])\n"
               "print(sys.path == before)\n")
    result = subprocess.run([sys.executable, "-c", program, default_loader_path()], capture_output=True, text=True,
                            env={**os.environ, "PTVS_DEBUG_PORT": "0", "PTVS_SAFE_ATTACH_LOADER_VERBOSE": "0"},
                            timeout=60)
    assert result.stdout.strip() == "True", result.stderr

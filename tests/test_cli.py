"""The command line, run as a subprocess: (status, output) for each form and each mistake."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap

import pytest

from fastattach.net.client import DAPClient


def run_cli(*args, cwd=None, timeout=60):
    proc = subprocess.run([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def test_script_gets_its_own_argv_and_path(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("import sys\nprint(sys.argv)\nprint(sys.path[0])\n")
    status, out, err = run_cli("--listen", "127.0.0.1:0", str(script), "a", "--flag")
    assert status == 0, err
    assert out.splitlines() == [repr([str(script), "a", "--flag"]), str(tmp_path)]
    assert re.search(r"^fastattach: listening on 127\.0\.0\.1:\d+$", err, re.M)


def test_module_form(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tool.py").write_text("import sys\nif __name__ == '__main__':\n    print('tool', sys.argv[1:])\n")
    status, out, err = run_cli("--listen", "0", "-m", "pkg.tool", "x", "-y", cwd=tmp_path)
    assert status == 0, err
    assert out.strip() == "tool ['x', '-y']"


def test_code_form():
    status, out, err = run_cli("--listen", "127.0.0.1:0", "-c", "import sys; print('code', sys.argv)", "arg")
    assert status == 0, err
    assert out.strip() == "code ['-c', 'arg']"


def test_exit_status_and_exceptions_of_the_program_pass_through(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("raise SystemExit(3)\n")
    assert run_cli("--listen", "0", str(script))[0] == 3
    script.write_text("raise ValueError('boom')\n")
    status, _, err = run_cli("--listen", "0", str(script))
    assert status == 1 and "ValueError: boom" in err


def test_missing_script_is_a_clear_error(tmp_path):
    status, _, err = run_cli("--listen", "0", str(tmp_path / "nope.py"))
    assert status == 2
    assert "can't open file" in err and "nope.py" in err


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:notaport", "expected [HOST:]PORT"),
    ("127.0.0.1:70000", "must be 0-65535"),
])
def test_bad_address_is_a_clear_error(address, message):
    status, _, err = run_cli("--listen", address, "-c", "pass")
    assert status == 2 and message in err


def test_port_in_use_is_a_clear_error_naming_the_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = run_cli("--listen", f"127.0.0.1:{port}", "-c", "print('ran')")
    assert status == 2
    assert f"127.0.0.1:{port}" in err and "ran" not in out


def test_no_program_is_a_usage_error():
    status, _, err = run_cli("--listen", "0")
    assert status == 2 and "give a program to run" in err


def test_wait_for_client_blocks_until_a_client_configures(tmp_path):
    script = tmp_path / "after.py"
    script.write_text("print('program ran', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                             "--wait-for-client", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stderr.readline().rsplit(":", 1)[1])
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)   # still waiting: nothing ran yet
        client = DAPClient.connect("127.0.0.1", port)
        client.attach()
        client.disconnect()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.strip() == "program ran"


def test_breakpoint_api_stops_at_the_callers_next_line(tmp_path):
    script = tmp_path / "bp.py"
    script.write_text(textwrap.dedent("""
        import fastattach
        fastattach.wait_for_client()
        value = 41
        fastattach.breakpoint()
        value += 1  # STOPS HERE
        print("value", value)
    """))
    stop_line = next(n for n, t in enumerate(script.read_text().splitlines(), 1) if "STOPS HERE" in t)
    proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                             str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stderr.readline().rsplit(":", 1)[1])
        client = DAPClient.connect("127.0.0.1", port)
        client.attach()
        stopped = client.wait_stopped(30)
        frame = client.top_frame(stopped["threadId"])
        assert frame["line"] == stop_line
        assert client.evaluate("value", frame["id"]) == "41"
        client.request("continue", {"threadId": stopped["threadId"]})
        client.disconnect()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "value 42"

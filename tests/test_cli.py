"""The command line, run as a subprocess: (status, output) for each form and each mistake."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
from _e2e import kill_if_running

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
        kill_if_running(proc)
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
        kill_if_running(proc)
    assert proc.returncode == 0, err
    assert out.strip() == "value 42"


# -- debugpy's command line --------------------------------------------------------------

def run_debugpy_cli(*args, cwd=None, timeout=120):
    proc = subprocess.run([sys.executable, "-Xfrozen_modules=off", "-m", "debugpy", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def debugpy_switches() -> list[tuple[str, bool]]:
    """(switch, takes a value) for every switch in the installed debugpy's server/cli.py
    `switches` table, its patterns made concrete ("" is the program's file name)."""
    import ast
    import importlib.util
    import pathlib

    spec = importlib.util.find_spec("debugpy")   # not imported: it would load pydevd
    source = pathlib.Path(spec.submodule_search_locations[0], "server", "cli.py").read_text()
    table = next(node.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "switches" for t in node.targets))
    switches = []
    for entry in table.elts:
        pattern, placeholder = entry.elts[0].value, entry.elts[1].value
        pattern = pattern.replace(".+", "subProcess")      # --configure-.+: one of debugpy's names
        group = re.fullmatch(r"(.*)\((.*)\)(.*)", pattern)  # -(V|-version): one switch per branch
        branches = group.group(2).split("|") if group else [""]
        for branch in branches:
            concrete = group.group(1) + branch + group.group(3) if group else pattern
            switches.append((concrete.replace("\\", ""), placeholder is not None))
    return switches


DEBUGPY_SWITCHES = debugpy_switches()
# Accepted switches covered by a test of their own elsewhere in this file.
COVERED_ELSEWHERE = {
    "--listen": "test_script_gets_its_own_argv_and_path",
    "--wait-for-client": "test_wait_for_client_blocks_until_a_client_configures",
    "": "test_script_gets_its_own_argv_and_path",
    "-m": "test_module_form",
    "-c": "test_code_form",
}


def test_the_switch_table_was_read():
    names = {name for name, _ in DEBUGPY_SWITCHES}
    assert {"--listen", "--connect", "--configure-subProcess", "-c", "-m", "--pid", "-?", "--version"} <= names


@pytest.mark.parametrize("switch, takes_value", DEBUGPY_SWITCHES, ids=lambda v: repr(v) if isinstance(v, str) else "")
def test_every_debugpy_switch_is_accepted_or_refused_in_one_line(switch, takes_value, tmp_path):
    from fastattach.cli import DEBUGPY_REFUSED

    if switch in DEBUGPY_REFUSED:
        assert DEBUGPY_REFUSED[switch][0] == takes_value, "our table and debugpy's disagree on the value"
        status, out, err = run_cli("--listen", "127.0.0.1:0", switch, *(["x"] if takes_value else []),
                                   "-c", "print('ran')")
        assert status == 2 and out == ""
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"fastattach: {switch} is debugpy's and not supported: ")
    elif switch in COVERED_ELSEWHERE:
        assert callable(globals()[COVERED_ELSEWHERE[switch]])
    elif switch in ("-?", "-h", "--help"):
        status, out, _ = run_cli(switch)
        assert status == 0 and "usage: python -m fastattach --listen" in out
    elif switch in ("-V", "--version"):
        import fastattach

        assert run_cli(switch)[:2] == (0, fastattach.__version__ + "\n")
    elif switch == "--log-to":
        status, out, err = run_cli("--listen", "127.0.0.1:0", "--log-to", str(tmp_path), "-c",
                                   "from fastattach import _api; print(_api.get_option('log_dir'))")
        assert (status, out) == (0, f"{tmp_path}\n"), err
    elif switch == "--log-to-stderr":
        status, _, err = run_cli("--listen", "127.0.0.1:0", "--log-to-stderr", "-c", "pass")
        assert status == 0 and re.search(r" fastattach INFO: fastattach: listening on 127\.0\.0\.1:\d+$", err, re.M)
    elif switch == "--configure-subProcess":
        status, out, err = run_cli("--listen", "127.0.0.1:0", switch, "false", "-c",
                                   "from fastattach import _api; print(_api.get_option('subProcess'))")
        assert (status, out) == (0, "False\n"), err
    elif switch == "--pid":
        sleeper = subprocess.Popen(["sleep", "60"])   # a real attach is in test_attach_dap.py
        try:
            status, _, err = run_cli("--listen", "127.0.0.1:0", "--pid", str(sleeper.pid))
        finally:
            sleeper.kill()
            sleeper.wait(10)
        assert status == 1 and f"PID {sleeper.pid} is not a CPython process" in err
    else:
        pytest.fail(f"debugpy's {switch!r} is neither accepted nor refused by fastattach's command line")


@pytest.mark.parametrize("args, out", [
    (["--configure-qt", "none", "--configure-subProcess", "FALSE"], "none False"),
    (["--configure-subProcess", "true", "--configure-subprocess_grace_period", "2"], "True 2.0"),
    (["--configure-budget_cooldown", "5", "--configure-probe_logging", "false"], "5.0 False"),
    (["--configure-snapshot_output", "event", "--configure-snapshot_frames", "2"], "event 2"),
])
def test_configure_switches_set_configure_options(args, out):
    names = [arg.removeprefix("--configure-") for arg in args[::2]]
    code = f"from fastattach import _api; print(*(_api.get_option(n) for n in {names!r}))"
    status, printed, err = run_cli("--listen", "127.0.0.1:0", *args, "-c", code)
    assert (status, printed.strip()) == (0, out), err


@pytest.mark.parametrize("args, message", [
    (["--configure-qt", "pyqt5"], "configure(qt=...): qt must be 'none'"),
    (["--configure-python", "/usr/bin/python3"], "--configure-python: python is not supported"),
    (["--configure-subProcess", "maybe"], "--configure-subProcess: 'maybe' is not a bool"),
    (["--configure-budget_cooldown", "soon"], "--configure-budget_cooldown: 'soon' is not a float"),
    (["--configure-nonsense", "1"], "--configure-nonsense: unknown option; known: "),
    (["--configure-budget_cooldown", "-1"], "budget_cooldown must be a finite number >= 0"),
    (["--"], "'--' before the program is not supported (nor by debugpy)"),
])
def test_configure_and_dashdash_mistakes_are_one_line_with_status_2(args, message):
    status, out, err = run_cli("--listen", "127.0.0.1:0", *args, "-c", "print('ran')")
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("fastattach: ") and message in err, err


def test_configure_switch_without_a_value():
    status, _, err = run_cli("--listen", "127.0.0.1:0", "-c", "pass", "--configure-qt")   # the program's own
    assert status == 0, err
    status, _, err = run_cli("--listen", "127.0.0.1:0", "--configure-qt")
    assert status == 2 and "--configure-qt: missing <value>" in err


@pytest.mark.parametrize("args", [
    ["-c", "import sys; print(sys.argv)", "--", "a", "--listen"],
    ["--configure-subProcess", "false", "--configure-qt", "none", "-c", "import sys; print(sys.argv)"],
    ["-m", "pkg.tool", "x", "--", "-y"],
    ["show.py", "--", "a"],
])
def test_program_and_argv_as_under_debugpy(args, tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tool.py").write_text("import sys\nif __name__ == '__main__':\n    print('tool', sys.argv)\n")
    (tmp_path / "show.py").write_text("import sys\nprint(sys.argv)\n")
    ours = run_cli("--listen", "127.0.0.1:0", *args, cwd=tmp_path)
    theirs = run_debugpy_cli("--listen", "127.0.0.1:0", *args, cwd=tmp_path)
    assert ours[:2] == theirs[:2], (ours, theirs)


def test_dashdash_before_the_program_is_refused_by_both():
    assert run_cli("--listen", "127.0.0.1:0", "--", "-c", "print('ran')")[:2] == (2, "")
    status, out, err = run_debugpy_cli("--listen", "127.0.0.1:0", "--", "-c", "print('ran')")
    assert (status, out) == (2, "") and "unrecognized switch --" in err


def test_log_to_stderr_logs_debugpy_too_once_a_client_attaches():
    proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                             "--log-to-stderr", "--wait-for-client", "-c", "print('ran')"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Our logger's own line comes first, then the CLI's.
        line = next(line for line in proc.stderr if line.startswith("fastattach: listening on"))
        client = DAPClient.connect("127.0.0.1", int(line.rsplit(":", 1)[1]))
        client.attach()
        client.disconnect()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0 and out == "ran\n", err
    assert "fastattach INFO: fastattach: client connected from 127.0.0.1:" in err
    assert re.search(r"^I\+\d+\.\d+: Initial environment:", err, re.M)   # debugpy's own log format


@pytest.mark.parametrize("form", ["script", "module", "code"])
def test_process_event_names_the_program_even_before_it_starts(form, tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tool.py").write_text("print('ran')\n")
    program, expected = {
        "script": ([str(package / "tool.py")], str(package / "tool.py")),
        "module": (["-m", "pkg.tool"], str(package / "tool.py")),
        "code": (["-c", "print('ran')"], "-c"),
    }[form]
    proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                             "--wait-for-client", *program], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stderr.readline().rsplit(":", 1)[1])
        client = DAPClient.connect("127.0.0.1", port)
        client.attach()
        name = client.wait_event("process", 30)["body"]["name"]
        client.disconnect()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0 and out == "ran\n", err
    assert name == expected


def test_debugpy_extra_argv_is_refused_not_ignored():
    env = {**os.environ, "DEBUGPY_EXTRA_ARGV": "--wait-for-client"}
    proc = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "-c", "print('ran')"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["fastattach: DEBUGPY_EXTRA_ARGV is debugpy's and not read by fastattach: "
                                        "put its switches on the command line, or unset it"]


@pytest.mark.parametrize("args, message", [
    (["--log-to-stderr"], "--log-to-stderr logs a program started by this command; with --pid use --log-to DIR"),
    (["--configure-qt", "none"], "--production, --configure-* and the budget flags apply to a program started"),
])
def test_pid_refuses_what_only_a_started_program_can_have(args, message):
    status, out, err = run_cli("--listen", "127.0.0.1:0", *args, "--pid", str(os.getpid()))
    assert status == 2 and out == "" and message in err

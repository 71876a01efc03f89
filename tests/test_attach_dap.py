"""Attach by PID with the real loader, then a full DAP session, in each target state.

The target runs no debugger until we attach. Then: breakpoint hit, evaluate, continue,
disconnect; then fastattach.stop() in the target, and a probe there checks that no
sys.monitoring tool or event is left (the overhead is back to none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from targets.attach_harness import (  # noqa: F401 (cleanup is a fixture)
    LINUX_X86_64_ONLY,
    NOTHING_LEFT,
    REPO,
    STATES,
    cleanup,
    debug_session,
    other_python,
    start_controlled,
    start_program,
    start_state,
)

from fastattach.attach import AttachError, attach

pytestmark = LINUX_X86_64_ONLY





@pytest.mark.parametrize("state", STATES)
def test_attach_then_full_debug_session(state, cleanup, tmp_path):
    # GIVEN a target in STATE, started without any debugger
    target, controller = start_controlled(state, tmp_path)
    cleanup.append(target)
    # WHEN we attach by PID and run a DAP session
    host, port = attach(target.pid, ("127.0.0.1", 0), timeout=20)
    token = debug_session(host, port, controller)
    # THEN the breakpoint stopped in the right frame of the right process, and the target
    # runs on; after stop() nothing is left registered in sys.monitoring
    assert token.endswith(f"-{target.pid}")
    target.assert_healthy()
    assert controller.stop_and_probe() == NOTHING_LEFT
    target.assert_healthy()


def test_attach_again_after_stop(cleanup, tmp_path):
    # GIVEN a target that was attached, debugged and stopped
    target, controller = start_controlled("sleep", tmp_path)
    cleanup.append(target)
    debug_session(*attach(target.pid, timeout=20), controller)
    assert controller.stop_and_probe() == NOTHING_LEFT
    # WHEN we attach a second time
    host, port = attach(target.pid, timeout=20)
    # THEN a new listener is up and a full session works again
    assert debug_session(host, port, controller).endswith(f"-{target.pid}")
    assert controller.stop_and_probe() == NOTHING_LEFT


def test_attach_while_listening_reuses_the_port(cleanup, tmp_path):
    # GIVEN a target already attached and listening
    target, _controller = start_controlled("busy", tmp_path)
    cleanup.append(target)
    first = attach(target.pid, timeout=20)
    # WHEN we attach again without stopping
    second = attach(target.pid, timeout=20)
    # THEN the same listener is handed out (no second port, no error)
    assert second == first
    target.assert_healthy()


def test_port_bind_failure_is_reported(cleanup, tmp_path):
    # GIVEN a target whose desired port is taken (by the target itself: it is listening on it)
    target = start_state("accept")
    cleanup.append(target)
    # WHEN we ask the target to listen on that same port
    with pytest.raises(AttachError) as caught:
        attach(target.pid, ("127.0.0.1", target.accept_port), timeout=20)
    # THEN the failure inside the target comes back with the reason, and the target runs on
    assert caught.value.reason == "bind_failed"
    expected = f"port bind failed in the target: cannot listen on 127.0.0.1:{target.accept_port}"
    assert str(caught.value).startswith(expected)
    target.assert_healthy()


def test_cli_pid_prints_the_address(cleanup, tmp_path):
    # GIVEN a running target
    target, controller = start_controlled("busy", tmp_path)
    cleanup.append(target)
    # WHEN the CLI attaches to it
    result = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--pid", str(target.pid)],
                            capture_output=True, text=True, timeout=60)
    # THEN it prints where to connect, and a session works there
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("fastattach: listening on 127.0.0.1:") and line.endswith(f" in PID {target.pid}")
    port = int(line.split("127.0.0.1:")[1].split()[0])
    assert debug_session("127.0.0.1", port, controller).endswith(f"-{target.pid}")


def test_cli_pid_error_goes_to_stderr_with_status_1(tmp_path):
    # GIVEN a PID that is not a Python process
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # WHEN the CLI is pointed at it
        result = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--pid",
                                 str(sleeper.pid)], capture_output=True, text=True, timeout=60)
        # THEN it fails cleanly with the reason
        assert result.returncode == 1
        assert f"PID {sleeper.pid} is not a CPython process" in result.stderr
        assert result.stdout == ""
    finally:
        sleeper.kill()
        sleeper.wait(10)


def _session_stops_in_application(host, port, expected_path):
    from fastattach.net.client import DAPClient

    client = DAPClient.connect(host, port, timeout=30)
    try:
        client.attach(timeout=30)
        stopped = client.wait_stopped(30)
        frame = client.top_frame(stopped["threadId"])
        client.request("continue", {"threadId": stopped["threadId"]})
        return frame
    finally:
        client.disconnect()


def test_wait_for_client_breaks_in_the_interrupted_main_thread_code(cleanup, tmp_path):
    # GIVEN a busy main thread (the mailbox runs the loader on it)
    target, _controller = start_controlled("busy", tmp_path)
    cleanup.append(target)
    # WHEN we attach asking to wait for the client
    host, port = attach(target.pid, wait_for_client=True, timeout=20)
    frame = _session_stops_in_application(host, port, None)
    # THEN the initial stop is in the application's code on the main thread, not in the loader
    assert frame["source"]["path"].endswith("attach_target.py"), frame
    target.assert_healthy()


def test_wait_for_client_with_a_blocked_main_thread_breaks_when_it_returns(cleanup):
    # GIVEN a main thread that spends its time in sleep() (so the attach goes through ptrace)
    target = start_program("import time\nprint('ready', flush=True)\ntick = 0\n"
                           "while True:\n    time.sleep(0.3)\n    tick += 1\n")
    cleanup.append(target)
    target.wait_main_thread_blocked()
    # WHEN we attach asking to wait for the client
    host, port = attach(target.pid, wait_for_client=True, timeout=20)
    frame = _session_stops_in_application(host, port, None)
    # THEN the main thread stops in its own loop as soon as it is back in Python code
    assert frame["name"] == "<module>" and frame["source"]["path"] == "<string>", frame
    assert frame["line"] in (5, 6, 7), frame
    target.assert_healthy()


def _other_python_or_skip() -> tuple[str, str]:
    found = other_python()
    if found is None:
        pytest.skip(f"no Python other than {sys.version_info[0]}.{sys.version_info[1]} with fastattach runs here "
                    f"(.venv/<version> made by scripts/bootstrap.sh)")
    return found


def test_attach_across_python_versions(cleanup, tmp_path):
    # GIVEN a target running another Python of this environment (3.12 <-> 3.13 on the host,
    # 3.14 <-> 3.15 in the sid chroot)
    _version, python = _other_python_or_skip()
    target, controller = start_controlled("sleep", tmp_path, python=python)
    cleanup.append(target)
    # WHEN this Python attaches to it
    host, port = attach(target.pid, timeout=20)
    # THEN the session works: the layout comes from the target, not from us
    assert debug_session(host, port, controller).endswith(f"-{target.pid}")
    assert controller.stop_and_probe() == NOTHING_LEFT


def test_cli_pid_across_python_versions(cleanup, tmp_path):
    # GIVEN a busy target on another Python, with fastattach installed for it
    _version, python = _other_python_or_skip()
    target, controller = start_controlled("busy", tmp_path, python=python)
    cleanup.append(target)
    # WHEN this Python's CLI attaches to it
    result = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--pid", str(target.pid)],
                            capture_output=True, text=True, timeout=60)
    # THEN it reports the address, and a session works there
    assert result.returncode == 0, result.stderr
    port = int(result.stdout.split("127.0.0.1:")[1].split()[0])
    assert debug_session("127.0.0.1", port, controller).endswith(f"-{target.pid}")


def _site_packages(python: str) -> str:
    return subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()


def test_cli_pid_to_a_python_without_fastattach_fails_before_reporting_success(cleanup, tmp_path):
    # GIVEN a target on another Python that can import debugpy but no fastattach of its own
    # (-S: its site-packages without the .pth that makes the editable install importable)
    version, python = _other_python_or_skip()
    target = start_state("busy", python, python_args=("-S",), env={"PYTHONPATH": _site_packages(python)})
    cleanup.append(target)
    # WHEN this Python's CLI attaches to it
    result = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--pid", str(target.pid)],
                            capture_output=True, text=True, timeout=60)
    # THEN it fails without printing success, saying which Python runs there and what to install
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert f"PID {target.pid} runs Python {version}." in result.stderr
    assert f"{python} -m pip install fastattach" in result.stderr
    target.assert_healthy()


def test_attach_loads_the_fastattach_built_for_the_targets_python(cleanup, tmp_path):
    # GIVEN a target on another Python whose own fastattach is a copy of the package with that
    # Python's C extension, while the attaching package has no build for that Python
    _version, python = _other_python_or_skip()
    site = _site_packages(python)
    own = tmp_path / "own"
    shutil.copytree(REPO / "python" / "fastattach", own / "fastattach",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for built in (Path(site) / "fastattach").glob("*.so"):
        shutil.copy2(built, own / "fastattach" / built.name)
    target, controller = start_controlled("sleep", tmp_path / "control", python=python, python_args=("-S",),
                                          env={"PYTHONPATH": f"{own}{os.pathsep}{site}"})
    cleanup.append(target)
    log = tmp_path / "loader.log"
    # WHEN we attach
    host, port = attach(target.pid, timeout=20, log_file=str(log))
    # THEN the target's own fastattach was loaded, and a session works with it
    assert f"using this process's own fastattach ({own / 'fastattach'})" in log.read_text()
    assert debug_session(host, port, controller).endswith(f"-{target.pid}")


def test_cli_pid_with_log_dir_writes_the_loader_log(cleanup, tmp_path):
    # GIVEN a running target and a log directory
    target, controller = start_controlled("sleep", tmp_path / "control")
    cleanup.append(target)
    logs = tmp_path / "logs"
    logs.mkdir()
    # WHEN the CLI attaches with --log-to
    result = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--log-to", str(logs),
                             "--pid", str(target.pid)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # THEN the loader's log is there, and says where it listens
    port = int(result.stdout.split("127.0.0.1:")[1].split()[0])
    log_text = (logs / f"fastattach-attach-{target.pid}.log").read_text()
    assert f"listening on 127.0.0.1:{port}" in log_text
    assert debug_session("127.0.0.1", port, controller).endswith(f"-{target.pid}")


def test_insecure_address_is_refused_in_the_target(cleanup, tmp_path):
    # GIVEN a running target
    target, _controller = start_controlled("busy", tmp_path)
    cleanup.append(target)
    # WHEN we ask it to listen on every interface without a secret
    with pytest.raises(AttachError) as caught:
        attach(target.pid, ("0.0.0.0", 0), timeout=20)
    # THEN the listener's own refusal comes back, and the target runs on without listening
    assert caught.value.reason == "loader_failed"
    assert str(caught.value).startswith("fastattach.listen failed in the target: refusing to listen on 0.0.0.0:0 "
                                        "without a secret")
    target.assert_healthy()


def test_secret_reaches_the_target(cleanup, tmp_path):
    from fastattach.net.client import DAPClient, DAPError
    # GIVEN a target attached with a secret
    target, controller = start_controlled("sleep", tmp_path)
    cleanup.append(target)
    host, port = attach(target.pid, secret="attach-secret-42", timeout=20)
    # WHEN a client comes without it, THEN it is turned away
    client = DAPClient.connect(host, port)
    try:
        with pytest.raises(DAPError):
            client.attach(timeout=10)
    finally:
        client.close()
    # and with it, a full session works
    assert debug_session(host, port, controller, secret="attach-secret-42").endswith(f"-{target.pid}")
    target.assert_healthy()


@pytest.mark.parametrize("first_secret, second, why", [
    (None, {"secret": "late-secret"}, "a secret was asked for"),
    (None, {"address": ("0.0.0.0", 0), "secret": "late-secret"}, "host 0.0.0.0 was asked for"),
    ("first-secret", {}, "no secret was given"),
    ("first-secret", {"secret": "other-secret"}, "another secret was given"),
], ids=["secret-added", "other-host", "secret-dropped", "secret-changed"])
def test_attach_while_listening_with_other_settings_is_refused(first_secret, second, why, cleanup, tmp_path):
    # GIVEN a target already listening from an earlier attach
    target, _controller = start_controlled("busy", tmp_path)
    cleanup.append(target)
    first_host, first_port = attach(target.pid, secret=first_secret, timeout=20)
    # WHEN a second attach asks for other settings
    with pytest.raises(AttachError) as caught:
        attach(target.pid, second.get("address", ("127.0.0.1", 0)), secret=second.get("secret"), timeout=20)
    # THEN it is refused, saying what listens and how to change it; the first listener stays
    assert caught.value.reason == "already_listening"
    described = "with a secret" if first_secret else "without a secret"
    assert str(caught.value).startswith(f"PID {target.pid} is already listening on {first_host}:{first_port} "
                                        f"{described}, and {why}. To change it, stop that listener first")
    assert attach(target.pid, secret=first_secret, timeout=20) == (first_host, first_port)
    target.assert_healthy()


def test_cli_pid_with_a_secret_on_a_process_listening_without_one_fails(cleanup, tmp_path):
    # GIVEN a target listening without a secret
    target, _controller = start_controlled("sleep", tmp_path)
    cleanup.append(target)
    host, port = attach(target.pid, timeout=20)
    # WHEN the CLI asks for a secret there
    result = subprocess.run([sys.executable, "-m", "fastattach", "--listen", "127.0.0.1:0", "--secret", "s3cret",
                             "--pid", str(target.pid)], capture_output=True, text=True, timeout=60)
    # THEN it reports no success and says what is listening
    assert result.returncode == 1 and result.stdout == ""
    assert f"already listening on {host}:{port} without a secret, and a secret was asked for" in result.stderr

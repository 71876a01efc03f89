"""Child processes debugged (issue 11, point 2): each child gets a session of its own.

Each test runs tests/targets/children.py under ``python -m fastattach``; the parent's client
attaches, then lets the program start one child (os.fork, a ProcessPoolExecutor with fork,
spawn or forkserver, or subprocess.run of a new interpreter). The client is told about the
child (startDebugging or debugpyAttach), attaches to it with the configuration it was given,
stops at a breakpoint in the child, and sees the child's session end with exited and
terminated. Every message of every session is checked against the DAP schema.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from _e2e import DebugServer, marker_line, target, wait_stop
from dap_schema import assert_valid

from fastattach import _subprocess
from fastattach.net.client import DAPClient

pytestmark = pytest.mark.timeout(240)

CHILDREN = target("children.py")
CHILD_LINE = marker_line(CHILDREN, "child-breakpoint")
ENTRY_LINE = marker_line(CHILDREN, "child-entry")


def start(mode: str, tmp_path, *options: str, wait_for_client: bool = False) -> DebugServer:
    """The program, waiting for the file ``go`` (attach_parent makes it) to start its child."""
    go = tmp_path / "go"
    server = DebugServer("fastattach", CHILDREN, mode, str(go), out_dir=tmp_path, wait_for_client=wait_for_client,
                         options=options)
    server.go = go
    return server


def attach_parent(server: DebugServer, *, start_debugging: bool = True, go: bool = True, ssl_context=None,
                  **attach_args) -> DAPClient:
    client = DAPClient.connect(*server.address, timeout=20, ssl_context=ssl_context)
    if start_debugging:
        client.initialize(supportsStartDebuggingRequest=True)
    else:
        client.initialize()
    client.attach(pathMappings=[], **attach_args)
    if go:
        server.go.touch()
    return client


def announced_child(parent: DAPClient, *, start_debugging: bool = True, timeout: float = 90) -> dict:
    """The attach configuration the parent's client was given for a child."""
    if start_debugging:
        request = parent.wait_request("startDebugging", timeout=timeout)
        assert request["arguments"]["request"] == "attach"
        parent.respond(request)
        configuration = request["arguments"]["configuration"]
    else:
        configuration = parent.wait_event("debugpyAttach", timeout=timeout)["body"]
        assert configuration["request"] == "attach"
    return configuration


def attach_child(configuration: dict, breakpoint_line: int | None = CHILD_LINE, ssl_context=None) -> DAPClient:
    connect = configuration["connect"]
    client = DAPClient.connect(connect["host"], connect["port"], timeout=20, ssl_context=ssl_context)
    breakpoints = {str(CHILDREN): [{"line": breakpoint_line}]} if breakpoint_line else None
    client.attach(breakpoints=breakpoints, **{k: v for k, v in configuration.items() if k != "request"})
    return client


def debug_child_to_its_end(configuration: dict, ssl_context=None) -> DAPClient:
    """Attach to the child, stop at the breakpoint in work(), continue; the session ends."""
    child = attach_child(configuration, ssl_context=ssl_context)
    stop = wait_stop(child, timeout=60)
    assert stop.line == CHILD_LINE
    assert child.evaluate("n", stop.frame_id) == "21"
    assert child.evaluate("os.getpid()", stop.frame_id) == str(configuration["subProcessId"])
    child.request("continue", {"threadId": stop.thread_id})
    assert_child_session_ended(child)
    return child


def assert_child_session_ended(child: DAPClient) -> None:
    """The child's exit: `exited` with its exit code, then `terminated`, once each."""
    assert child.wait_event("exited", timeout=60)["body"] == {"exitCode": 0}
    child.wait_event("terminated", timeout=60)
    received = [message for direction, message, _ in child.transcript if direction == "recv"]
    events = [message.get("event") for message in received if message["type"] == "event"]
    assert events.count("exited") == events.count("terminated") == 1
    assert events.index("exited") < events.index("terminated")


def finish(server: DebugServer, parent: DAPClient, *children: DAPClient) -> None:
    server.wait_for_stdout(r"^PARENT done", timeout=90)
    assert not parent.events("stopped"), "the parent's session saw a child's breakpoint"
    parent.disconnect()
    assert server.wait(30) == 0
    for client in (parent, *children):
        client.close()
        assert_valid(client.transcript)


def test_a_forked_child_stops_at_a_breakpoint_in_its_own_session(tmp_path):
    # GIVEN a client attached with supportsStartDebuggingRequest, WHEN the program forks
    with start("fork", tmp_path) as server:
        parent = attach_parent(server)
        configuration = announced_child(parent)
        # THEN the client gets startDebugging for the child, on the parent's host, with the
        # parent's attach settings, and a secret of the child's own
        assert configuration["connect"]["host"] == server.address[0]
        assert configuration["connect"]["port"] != server.address[1]
        assert configuration["pathMappings"] == [] and configuration["justMyCode"] is True
        assert configuration["name"] == f"Subprocess {configuration['subProcessId']}"
        assert configuration["secret"]
        # AND the child's session stops at the breakpoint in it and ends with exited, terminated
        child = debug_child_to_its_end(configuration)
        server.wait_for_stdout(r"^CHILD EXIT 0")
        finish(server, parent, child)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_process_pool_worker_stops_in_a_child_session_and_the_pool_finishes(method, tmp_path):
    with start(f"mp-{method}", tmp_path) as server:
        parent = attach_parent(server)
        child = debug_child_to_its_end(announced_child(parent))
        server.wait_for_stdout(r"^POOL results \[42\]", timeout=90)
        finish(server, parent, child)


def test_a_child_is_debugged_when_a_later_at_fork_handler_holds_a_lock_its_session_logs_through(tmp_path):
    # GIVEN a program that, after its client attached, logs through a handler whose lock an
    # at-fork handler of its own holds across a fork (so registered after ours: as logging's
    # is in a 3.14 forkserver, which imports the program's __main__ after ours was set up)
    with start("fork-guarded", tmp_path) as server:
        parent = attach_parent(server)
        configuration = announced_child(parent)
        # WHEN the program forks THEN the child's session, whose threads log, is served and stops
        child = debug_child_to_its_end(configuration)
        server.wait_for_stdout(r"^CHILD EXIT 0")
        finish(server, parent, child)


def test_a_python_started_by_subprocess_gets_a_session(tmp_path):
    with start("subprocess", tmp_path) as server:
        parent = attach_parent(server)
        configuration = announced_child(parent)
        child = debug_child_to_its_end(configuration)
        server.wait_for_stdout(r"^CHILD EXIT 0")
        assert f"CHILD {configuration['subProcessId']} result 42" in server.stdout()
        finish(server, parent, child)


def test_a_client_without_start_debugging_gets_debugpys_attach_event(tmp_path):
    with start("fork", tmp_path) as server:
        parent = attach_parent(server, start_debugging=False)
        configuration = announced_child(parent, start_debugging=False)
        assert not parent.requests("startDebugging")
        child = debug_child_to_its_end(configuration)
        finish(server, parent, child)


def test_the_childs_listener_refuses_a_client_without_its_secret(tmp_path):
    with start("fork", tmp_path) as server:
        parent = attach_parent(server)
        configuration = announced_child(parent)
        intruder = DAPClient.connect(configuration["connect"]["host"], configuration["connect"]["port"])
        without_secret = {k: v for k, v in configuration.items() if k not in ("request", "secret")}
        intruder.initialize()
        refused = intruder.request("attach", without_secret, check=False)
        assert not refused["success"] and "requires a secret" in refused["message"]
        intruder.close()
        child = debug_child_to_its_end(configuration)
        finish(server, parent, child)
        assert_valid(intruder.transcript)


def test_a_child_nobody_attaches_to_runs_on_after_the_grace_period(tmp_path):
    with start("fork", tmp_path, "--configure-subprocess_grace_period", "1") as server:
        parent = attach_parent(server)
        announced_child(parent)   # told, and never attached to
        server.wait_for_stdout(r"^CHILD EXIT 0", timeout=60)
        assert "result 42" in server.stdout()
        finish(server, parent)


def test_subprocess_false_debugs_no_child(tmp_path):
    with start("subprocess", tmp_path) as server:
        parent = attach_parent(server, subProcess=False)
        server.wait_for_stdout(r"^CHILD EXIT 0", timeout=60)
        assert "env False" in server.stdout()
        finish(server, parent)
        assert not parent.requests("startDebugging")


def test_configure_subprocess_false_debugs_no_child(tmp_path):
    with start("fork", tmp_path, "--configure-subProcess", "false") as server:
        parent = attach_parent(server)
        server.wait_for_stdout(r"^CHILD EXIT 0", timeout=60)
        finish(server, parent)
        assert not parent.requests("startDebugging")


def test_with_wait_for_client_a_child_stops_at_its_first_line(tmp_path):
    with start("fork", tmp_path, wait_for_client=True) as server:
        parent = attach_parent(server)
        configuration = announced_child(parent)
        child = attach_child(configuration)
        entry = wait_stop(child, timeout=60)
        assert entry.line == ENTRY_LINE
        child.request("continue", {"threadId": entry.thread_id})
        stop = wait_stop(child, timeout=60)
        assert stop.line == CHILD_LINE
        child.request("continue", {"threadId": stop.thread_id})
        assert_child_session_ended(child)
        finish(server, parent, child)


# -- the registry alone: a registration needs the token ------------------------------------------
def _register_raw(registry: _subprocess.Registry, message: dict) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect("\0" + registry.name)
        sock.sendall(json.dumps(message).encode() + b"\n")
        return sock.makefile().readline().strip()


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
def test_the_registry_refuses_a_wrong_or_missing_token(token):
    heard = []
    registry = _subprocess.Registry(lambda child: heard.append(child) is None, host="127.0.0.1", grace_period=1.0,
                                    entry=False)
    try:
        child = {"pid": 1234, "ppid": 1, "host": "127.0.0.1", "port": 4321, "secret": "s"}
        message = dict(child) if token is None else {**child, "token": token}
        assert _register_raw(registry, message) == "refused: wrong token"
        assert _register_raw(registry, {**child, "token": registry.token, "port": "4321"}) == (
            "refused: malformed registration")
        assert heard == []
        _subprocess.register(json.loads(registry.environment_value), child)
        assert heard == [child]
    finally:
        registry.close()
    with pytest.raises(OSError):
        _subprocess.register(json.loads(registry.environment_value), child)


def test_the_pth_file_is_inert_without_the_variable():
    # A plain interpreter of this venv: fastattach is not imported by the .pth file.
    code = "import sys; print('fastattach' in sys.modules)"
    env = {name: value for name, value in os.environ.items() if name != _subprocess.ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "False"


def test_a_subprocess_between_fork_and_exec_gets_no_session(tmp_path):
    # subprocess with preexec_fn runs the at-fork handlers in the child before exec()
    with start("preexec", tmp_path) as server:
        parent = attach_parent(server)
        server.wait_for_stdout(r"^CHILD EXIT 0", timeout=60)
        finish(server, parent)
        assert not parent.requests("startDebugging")


def test_a_child_of_a_parent_whose_client_has_gone_runs_on_at_once(tmp_path):
    with start("subprocess", tmp_path, "--configure-subprocess_grace_period", "600") as server:
        parent = attach_parent(server, go=False)
        parent.disconnect()
        server.go.touch()   # the child starts after the client has gone
        server.wait_for_stdout(r"^CHILD EXIT 0", timeout=120)
        assert "env False" in server.stdout()
        assert server.wait(30) == 0
        assert_valid(parent.transcript)


def test_with_wait_for_client_a_new_interpreter_stops_in_its_main_module(tmp_path):
    with start("subprocess", tmp_path, wait_for_client=True) as server:
        parent = attach_parent(server)
        child = attach_child(announced_child(parent))
        entry = wait_stop(child, timeout=60)
        frame = child.top_frame(entry.thread_id)
        assert (frame["name"], frame["source"]["path"]) == ("<module>", str(CHILDREN))
        child.request("continue", {"threadId": entry.thread_id})
        stop = wait_stop(child, timeout=60)
        assert stop.line == CHILD_LINE
        child.request("continue", {"threadId": stop.thread_id})
        assert_child_session_ended(child)
        finish(server, parent, child)


def _impostor(name: str, report_fd: int) -> None:
    """In a forked child, as user nobody: hold the registry's name and report what it hears."""
    try:
        os.setgid(65534)
        os.setuid(65534)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind("\0" + name)
        server.listen(1)
        os.write(report_fd, b"bound\n")
        conn, _ = server.accept()
        conn.settimeout(10)
        os.write(report_fd, b"heard " + repr(conn.recv(4096)).encode() + b"\n")
    finally:
        os._exit(0)


@pytest.mark.skipif(os.getuid() != 0, reason="running a registry as another user needs root")
def test_a_child_never_registers_with_a_registry_of_another_user():
    # GIVEN the registry's name held by a process of another user (abstract names are public)
    name = f"fastattach-impostor-{os.getpid()}"
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        _impostor(name, writer)
    os.close(writer)
    try:
        with os.fdopen(reader) as report:
            assert report.readline() == "bound\n"
            child = {"pid": os.getpid(), "ppid": 1, "host": "127.0.0.1", "port": 4321, "secret": "the-secret"}
            # WHEN a child registers THEN it refuses, and the impostor hears nothing
            with pytest.raises(_subprocess.RegistrationRefused, match="another user"):
                _subprocess.register({"endpoint": name, "token": "t"}, child)
            assert report.readline() == "heard b''\n"
    finally:
        os.waitpid(pid, 0)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_with_wait_for_client_a_pool_worker_stops_only_at_its_breakpoint(method, tmp_path):
    # multiprocessing forks (or bootstraps) inside the standard library: no entry stop there
    with start(f"mp-{method}", tmp_path, wait_for_client=True) as server:
        parent = attach_parent(server)
        child = debug_child_to_its_end(announced_child(parent))
        server.wait_for_stdout(r"^POOL results \[42\]", timeout=90)
        finish(server, parent, child)


def test_a_grandchild_is_announced_by_its_parents_session(tmp_path):
    with start("grandchild", tmp_path) as server:
        parent = attach_parent(server)
        child_configuration = announced_child(parent)
        child = attach_child(child_configuration, breakpoint_line=None)
        # the child's client did not declare supportsStartDebuggingRequest: debugpyAttach
        grandchild_configuration = announced_child(child, start_debugging=False)
        assert grandchild_configuration["subProcessId"] != child_configuration["subProcessId"]
        grandchild = debug_child_to_its_end(grandchild_configuration)
        assert_child_session_ended(child)
        server.wait_for_stdout(r"^CHILD EXIT 0")
        assert not parent.requests("startDebugging"), "the grandchild was announced twice"
        finish(server, parent, child, grandchild)


def test_a_new_interpreter_takes_the_parents_production_mode(tmp_path):
    with start("subprocess", tmp_path, "--production") as server:
        parent = attach_parent(server)
        child = attach_child(announced_child(parent))
        server.wait_for_stdout(r"^CHILD EXIT 0", timeout=60)
        assert "production True" in server.stdout()
        assert not child.events("stopped"), "production mode never stops a thread"
        finish(server, parent, child)


def test_configure_subprocess_false_during_a_session_stops_debugging_new_children(tmp_path):
    with start("subprocess", tmp_path) as server:
        parent = attach_parent(server, go=False)
        parent.evaluate("__import__('fastattach').configure(subProcess=False)")
        server.go.touch()
        server.wait_for_stdout(r"^CHILD EXIT 0", timeout=60)
        assert "env False" in server.stdout()
        finish(server, parent)
        assert not parent.requests("startDebugging")


def test_a_child_of_a_tls_parent_listens_with_tls_and_its_own_secret(tmp_path):
    import ssl

    from test_security import make_certificate

    certfile, keyfile = make_certificate(tmp_path, "children")
    context = ssl.create_default_context(cafile=certfile)
    with start("fork", tmp_path, "--certfile", certfile, "--keyfile", keyfile, "--secret", "parent-secret") as server:
        parent = attach_parent(server, ssl_context=context, secret="parent-secret")
        configuration = announced_child(parent)
        assert configuration["secret"] != "parent-secret"
        # a plain-text client gets nowhere with the child
        with socket.create_connection((configuration["connect"]["host"], configuration["connect"]["port"])) as plain:
            plain.settimeout(10)
            plain.sendall(b'Content-Length: 2\r\n\r\n{}')
            try:
                answer = plain.recv(4096)
            except ConnectionResetError:
                answer = b""
            assert b"Content-Length" not in answer
        child = debug_child_to_its_end(configuration, ssl_context=context)
        finish(server, parent, child)


def test_a_child_run_under_fastattach_listens_as_its_command_line_says(tmp_path):
    with start("fastattach", tmp_path) as server:
        parent = attach_parent(server)
        server.wait_for_stdout(r"^CHILD EXIT 0", timeout=60)
        assert "result 42" in server.stdout()
        finish(server, parent)
        assert not parent.requests("startDebugging")


def test_the_parents_breakpoints_do_not_follow_a_child_into_its_session(tmp_path):
    # GIVEN the parent's client has a breakpoint in work(), which only the child runs
    with start("fork", tmp_path) as server:
        parent = attach_parent(server, go=False)
        parent.set_breakpoints(str(CHILDREN), [{"line": CHILD_LINE}])
        server.go.touch()
        # WHEN the child's session is configured without breakpoints
        child = attach_child(announced_child(parent), breakpoint_line=None)
        # THEN nobody stops: the child ran work() and exited
        assert_child_session_ended(child)
        server.wait_for_stdout(r"^CHILD EXIT 0")
        assert "result 42" in server.stdout()
        assert not child.events("stopped")
        finish(server, parent, child)

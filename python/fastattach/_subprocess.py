"""Child processes debugged (subProcess, issue 11): each child gets a session of its own.

Public interface (what the servers branch and the docs rely on):

- Options: ``subProcess`` (default True, as in debugpy; a client's attach argument
  ``"subProcess": false`` turns it off for that session) and ``subprocess_grace_period``
  (seconds, default 5.0: how long a child waits for its client before running on).
- While a client with subProcess on is attached, the parent holds a ``Registry``: an abstract
  unix socket, ``FASTATTACH_SUBPROCESS`` (``ENV``) in os.environ names it together with a
  random token, the listening host and the TLS files. Forked children (an at-fork handler)
  and new interpreters (``fastattach-subprocess.pth``, inert without ``ENV``) inherit it.
- A child calls ``start_child_session``: it listens on an ephemeral port of the parent's
  host, with a one-time secret of its own (and the parent's TLS files), registers
  {pid, ppid, host, port, secret} with the parent, and waits up to the grace period for a
  client's configurationDone. Without one it stops listening and runs on at full speed.
- The parent announces the child to its client (``child_configuration``): the reverse
  request ``startDebugging`` if the client's initialize declared
  ``supportsStartDebuggingRequest``, else debugpy's ``debugpyAttach`` event, with the
  parent's attach arguments, ``connect: {host, port}``, ``subProcessId`` and ``secret``.
- A forked child keeps the parent's options; a new interpreter is given those that differ
  from the defaults (production mode, budgets) in ``ENV``.
- When the parent was started with ``--wait-for-client``, a child also stops at its first
  line of its own: the line after the program's own os.fork() (not one made inside the
  standard library or an installed package), or the first line of ``__main__``.

Not debugged: multiprocessing's resource_tracker; the forkserver process itself (the children
it forks are); a child whose environment was replaced (``env=`` without ``ENV``); a
``subprocess`` child between fork and exec (preexec_fn); the workers of a forkserver started
before the client attached (it keeps the environment it started with). Standard library only.
"""

from __future__ import annotations

import functools
import hmac
import json
import os
import secrets
import socket
import struct
import sys
import threading
import time

from ._log import logger

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 MB with its imports)
if TYPE_CHECKING:
    from collections.abc import Callable

ENV = "FASTATTACH_SUBPROCESS"
# How long a child's registration may take (the parent answers from a thread of its own).
REGISTER_TIMEOUT = 5.0
MAX_REGISTRATION_BYTES = 4096
# debugpy's adapter drops these from the parent's arguments before announcing a child
# (debugpy/adapter/clients.py, notify_of_subprocess); "connect" is the child's own here.
_PARENT_ONLY_ARGUMENTS = ("processId", "listen", "preLaunchTask", "postDebugTask", "request", "restart",
                          "args", "processName", "pythonArgs", "host", "port", "connect", "secret")
# Python processes of multiprocessing's that run no user code: never a session of their own.
_HELPER_PROCESSES = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


class RegistrationRefused(OSError):
    """The parent's registry did not take this child (wrong token, or it is closing)."""


# -- the parent's side --------------------------------------------------------------------------
class Registry:
    """Where this process's children register, while its client wants them (subProcess).

    An abstract unix socket with a random name: nothing in the file system to clean up, and
    gone with the process. Abstract sockets have no permissions, so a registration must carry
    the token and come from a process of our own user (SO_PEERCRED). ``on_child(child)``
    returns whether the child was announced; a child that was not runs on at once."""

    def __init__(self, on_child: Callable[[dict], bool], *, host: str, grace_period: float, entry: bool,
                 certfile: str | None = None, keyfile: str | None = None, options: dict | None = None):
        self._on_child = on_child
        self.token = secrets.token_urlsafe(24)
        self.name = f"fastattach-{os.getpid()}-{secrets.token_hex(8)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind("\0" + self.name)
            self._sock.listen(64)
        except OSError:
            self._sock.close()
            raise
        self.environment_value = json.dumps({
            "endpoint": self.name, "token": self.token, "host": host, "grace": grace_period, "entry": entry,
            "certfile": certfile, "keyfile": keyfile, "options": options or {}}, separators=(",", ":"))
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="fastattach.children", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)   # wakes the accept() below
        except OSError:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(REGISTER_TIMEOUT)
        self._sock.close()

    def abandon_after_fork(self) -> None:
        """In a forked child: our copy of the parent's socket closes; the parent's stays open."""
        self._closed = True
        self._sock.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closed:
                    return
                time.sleep(0.1)   # out of descriptors: wait it out, children retry or run on
                continue
            try:
                with conn:
                    conn.settimeout(REGISTER_TIMEOUT)
                    verdict, child = self._check(conn)
                    if child is not None and not self._on_child(child):
                        verdict = "refused: the parent's client is gone"
                    conn.sendall(verdict.encode() + b"\n")
            except Exception:
                logger.exception("fastattach: a child's registration failed")

    def _check(self, conn: socket.socket) -> tuple[str, dict | None]:
        """("ok", the child) or (why not, None)."""
        if peer_uid(conn) != os.getuid():
            return "refused: not a process of this user", None
        data = b""
        while not data.endswith(b"\n") and len(data) <= MAX_REGISTRATION_BYTES:
            chunk = conn.recv(MAX_REGISTRATION_BYTES)
            if not chunk:
                break
            data += chunk
        try:
            message = json.loads(data)
        except ValueError:
            return "refused: not a registration", None
        if not isinstance(message, dict) or not isinstance(message.get("token"), str) or not hmac.compare_digest(
                message["token"].encode(), self.token.encode()):
            return "refused: wrong token", None
        child = {key: message.get(key) for key in ("pid", "ppid", "host", "port", "secret")}
        if not (all(isinstance(child[key], int) and not isinstance(child[key], bool) for key in ("pid", "ppid", "port"))
                and isinstance(child["host"], str) and isinstance(child["secret"], str) and 0 < child["port"] < 65536):
            return "refused: malformed registration", None
        return "ok", child


def peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end of a unix socket (SO_PEERCRED: pid, uid, gid)."""
    return struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]


def child_configuration(attach_arguments: dict, child: dict) -> dict:
    """The attach configuration a client is given for `child`, as debugpy's adapter makes it
    (clients.py, notify_of_subprocess): the parent's attach arguments, the child's address,
    its subProcessId and name, and the child's one-time secret."""
    body = {key: value for key, value in attach_arguments.items() if key not in _PARENT_ONLY_ARGUMENTS}
    body["name"] = f"Subprocess {child['pid']}"
    body["subProcessId"] = child["pid"]
    body["connect"] = {"host": _client_host(attach_arguments, child["host"]), "port": child["port"]}
    body["secret"] = child["secret"]
    return body


def _client_host(attach_arguments: dict, child_host: str) -> str:
    """Where the client reaches the child: its listening host, unless that is a wildcard
    (0.0.0.0, ::); then the host the client named for the parent, as debugpy's adapter uses."""
    if child_host not in ("0.0.0.0", "::", ""):
        return child_host
    connect = attach_arguments.get("connect")
    named = connect.get("host") if isinstance(connect, dict) else attach_arguments.get("host")
    return named if isinstance(named, str) and named else ("::1" if child_host == "::" else "127.0.0.1")


def announcement(attach_arguments: dict, supports_start_debugging: bool, child: dict) -> tuple[str, str, dict]:
    """("request" or "event", its command or event name, its body) for telling the client."""
    configuration = child_configuration(attach_arguments, child)
    if supports_start_debugging:
        return "request", "startDebugging", {"request": "attach", "configuration": configuration}
    return "event", "debugpyAttach", {**configuration, "request": "attach"}


# -- the child's side ---------------------------------------------------------------------------
def inherited_config() -> dict | None:
    """The parent's registry as this process inherited it, or None (not a debugged child)."""
    text = os.environ.get(ENV)
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError:
        return None
    return config if isinstance(config, dict) and isinstance(config.get("endpoint"), str) else None


def register(config: dict, child: dict) -> None:
    """Tell the parent's registry about this child; RegistrationRefused or OSError if it will not hear."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(REGISTER_TIMEOUT)
        sock.connect("\0" + config["endpoint"])
        # Abstract names are listed in /proc/net/unix for every user: once the parent's registry
        # has closed, another user could bind its name and collect this child's secret.
        if peer_uid(sock) != os.getuid():
            raise RegistrationRefused("the registry belongs to another user")
        sock.sendall(json.dumps({**child, "token": config.get("token")}).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            answer += chunk
    if answer.strip() != b"ok":
        raise RegistrationRefused(answer.decode(errors="replace").strip() or "the registry closed the connection")


def start_child_session(_api, config: dict, entry_frame=None) -> bool:
    """Listen, register with the parent, wait for a client (up to the grace period).

    ``_api`` is fastattach._api, handed in by its caller (that module imports this one).

    True if a client configured this child's session. Never raises: a child that cannot be
    debugged runs on without a debugger."""
    started = time.monotonic()
    _api.session().children_stop_at_entry = bool(config.get("entry"))
    _api.session().is_child = True
    try:
        secret = secrets.token_urlsafe(24)
        host, port = _api.listen((config["host"], 0), secret=secret, certfile=config.get("certfile"),
                                 keyfile=config.get("keyfile"))
    except Exception as error:
        _warn(f"this child is not debugged: cannot listen ({error})")
        return False
    try:
        register(config, {"pid": os.getpid(), "ppid": os.getppid(), "host": host, "port": port, "secret": secret})
    except OSError:
        _api.stop()   # the parent's session is over (or it refused): nobody will come
        return False
    grace = config.get("grace", 2.0)
    grace = grace if isinstance(grace, (int, float)) and not isinstance(grace, bool) and grace >= 0 else 2.0
    configured = _api.wait_for_client(max(0.0, grace - (time.monotonic() - started)))
    if not configured:
        if not _api.is_client_connected():
            _api.stop()
            return False
        # Attached but still configuring: a last short wait, never an unbounded one.
        configured = _api.wait_for_client(1.0)
    if configured and config.get("entry") and entry_frame is not None:
        _api.break_at(entry_frame)
    return configured


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"fastattach: {message}\n")
    except Exception:
        pass


# -- how a child starts its session ---------------------------------------------------------------
_fork_hook_registered = False
# The child handler that acts (older registrations stay in CPython's list and do nothing), and
# how many modules were imported when it was registered.
_active_child_handler: Callable[[], None] | None = None
_modules_when_registered = -1


def register_fork_hook(_api) -> None:
    """Once per process: our child handler is (re)registered just before a fork (see below)."""
    global _fork_hook_registered
    if not _fork_hook_registered:
        _fork_hook_registered = True
        os.register_at_fork(before=functools.partial(_before_fork, _api))


def _before_fork(_api) -> None:
    """The child waits for its client inside our at-fork handler, so that handler must come
    after every other: their child handlers (logging's frees the module lock its `before`
    took; concurrent.futures' its shutdown lock) run in the order registered, and until they
    have run, every thread of the child's session that logs or imports such a module waits.
    Modules register theirs when imported (a forkserver imports the program's __main__, and
    logging with it, after boot() ran), so after an import ours is registered anew: CPython
    reads the list of child handlers after the fork, so this one runs last in this child."""
    global _active_child_handler, _modules_when_registered
    try:
        if ENV not in os.environ or len(sys.modules) == _modules_when_registered:
            return

        def child_handler() -> None:
            if child_handler is _active_child_handler:
                _after_fork_in_child(_api)

        os.register_at_fork(after_in_child=child_handler)
        _active_child_handler, _modules_when_registered = child_handler, len(sys.modules)
    except BaseException:   # noqa: BLE001 (the program's fork goes on, whatever happened to us)
        pass


def _after_fork_in_child(_api) -> None:
    config = inherited_config()
    if config is None:
        return
    try:
        forking_frame = sys._getframe(2)   # 1 is child_handler, called by os.fork()
    except ValueError:   # forked from C with no Python frame: nothing to stop at, still a child
        forking_frame = None
    # subprocess with preexec_fn runs the at-fork handlers between fork and exec: the program
    # that exec() starts is the child (the .pth sees to it if it is Python).
    if forking_frame is not None and forking_frame.f_globals.get("__name__") == "subprocess":
        return
    try:
        start_child_session(_api, config, entry_frame=forking_frame if forking_frame is not None and config.get(
            "entry") and not _in_library(forking_frame) else None)
    except BaseException:   # noqa: BLE001 (the child runs on, whatever happened to its debugger)
        pass


def _in_library(frame) -> bool:
    """A fork made by the standard library or an installed package (multiprocessing, gunicorn's
    arbiter): the line after it is theirs, so the child gets no entry stop there."""
    import sysconfig

    filename = os.path.realpath(frame.f_code.co_filename)
    paths = sysconfig.get_paths()
    roots = {os.path.realpath(paths[name]) for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths}
    return any(filename.startswith(root + os.sep) for root in roots)


def boot(_api) -> None:
    """A new interpreter started with ENV set (from fastattach-subprocess.pth, during site)."""
    config = inherited_config()
    if config is None:
        return
    argv = list(getattr(sys, "orig_argv", ()))
    command = " ".join(argv)
    if "multiprocessing.resource_tracker" in command or _runs_fastattach(argv):
        return
    if "multiprocessing.forkserver" in command:
        register_fork_hook(_api)   # its forks run the user's code: they are the children
        return
    _without_site_lock(lambda: _configure_then_start(_api, config))
    # A multiprocessing spawn child's main is multiprocessing's own bootstrap: no entry stop there.
    if config.get("entry") and "--multiprocessing-fork" not in command:
        _break_at_main_start(_api)
    register_fork_hook(_api)


def _runs_fastattach(argv: list[str]) -> bool:
    """`python -m fastattach ...` or the fastattach script: it listens (or attaches) as it is told."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "-m":
            return value.split(".")[0] == "fastattach"
    return len(argv) > 1 and os.path.basename(argv[1]) == "fastattach"


def _configure_then_start(_api, config: dict) -> None:
    """A new interpreter has the default options: it takes the parent's (production mode, budgets)."""
    options = config.get("options")
    if isinstance(options, dict) and options:
        try:
            _api.configure(options)
        except ValueError as error:
            _warn(f"this child is not debugged: the parent's options do not apply here ({error})")
            return
    start_child_session(_api, config, entry_frame=None)


def transferable_options(options: dict, defaults: dict) -> dict:
    """The options a new interpreter must take from its parent: those changed from the default
    whose values survive JSON (a redact_types class does not: its "module.QualName" must be used)."""
    chosen = {}
    for name, value in options.items():
        if value == defaults.get(name):
            continue
        if name == "redact_types":
            value = [item for item in value if isinstance(item, str)]
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        chosen[name] = list(value) if isinstance(value, tuple) else value
    return chosen


def _without_site_lock(run: Callable[[], object]) -> None:
    """Run `run` while `site` is still being imported (the .pth runs inside it): another thread's
    `import site` (pydevd imports it while setting up) would wait for that import to end and
    so for us. Every name of site's is defined by then (main() is its last line), so for the
    wait it counts as imported; importlib clears the flag again when the import ends."""
    spec = getattr(sys.modules.get("site"), "__spec__", None)
    was = getattr(spec, "_initializing", False)
    try:
        if was:
            spec._initializing = False
        run()
    except BaseException:   # noqa: BLE001 (the interpreter starts, whatever happened to its debugger)
        pass
    finally:
        if was:
            spec._initializing = True


def _break_at_main_start(_api) -> None:
    """--wait-for-client in the parent: a new interpreter stops at the first line of its
    program, as the parent did (a one-shot sys.setprofile on the main thread)."""
    if not _api.is_client_connected():
        return

    def first_call(frame, event, arg):
        if event == "call" and frame.f_globals.get("__name__") == "__main__":
            sys.setprofile(None)
            try:
                _api.break_at(frame)
            except Exception:
                pass

    sys.setprofile(first_call)

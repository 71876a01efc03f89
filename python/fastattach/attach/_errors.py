"""The one exception the orchestrator raises, with a reason code per failure kind."""

from __future__ import annotations

import os


class AttachError(RuntimeError):
    """Attaching failed; ``str(err)`` is the message for the user, ``reason`` the kind:

    permission, no_such_process, not_python, unsupported, remote_debug_disabled,
    bind_failed, no_safe_point, loader_missing, target_stopped, timeout, injection_failed,
    loader_failed (the loader ran but could not import or start the listener),
    already_listening (the target listens with other settings than the ones asked for),
    not_installed (no fastattach built for the target's Python is importable there).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _yama_scope() -> str | None:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return f.read().strip()
    except OSError:
        return None


def target_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def permission_error(pid: int, detail: str) -> AttachError:
    """EPERM/EACCES from /proc, process_vm_* or ptrace: say why and how to fix it."""
    uid = target_uid(pid)
    owner = f"owned by uid {uid}" if uid is not None else "owner unknown"
    scope = _yama_scope()
    if scope is None:
        yama = "Yama is not loaded here, so only the uid and the capability matter"
    else:
        yama = (f"Yama ptrace_scope is {scope}; it must be 0 (echo 0 > /proc/sys/kernel/yama/ptrace_scope) "
                "unless you have CAP_SYS_PTRACE")
    return AttachError(
        "permission",
        f"not allowed to attach to PID {pid} ({owner}; we run as uid {os.geteuid()}): {detail}. "
        f"Attaching needs the same permission as ptrace: run as the target's user or as root, or grant "
        f"CAP_SYS_PTRACE (Docker: --cap-add=SYS_PTRACE; Kubernetes: securityContext.capabilities.add: "
        f"[SYS_PTRACE]). {yama}.")


def status_field(pid: int, name: str) -> str | None:
    """One field of /proc/PID/status (e.g. "State", "TracerPid"), or None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def process_state(pid: int) -> str:
    """The State line of /proc/PID/status, e.g. 'S (sleeping)', or 'gone' if the process exited."""
    return status_field(pid, "State") or "gone"

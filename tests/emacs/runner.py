"""Run Emacs dap-mode (Debian's elpa-dap-mode) in batch mode as a real DAP client.

    result = run_dap_mode(host, port, target, out_dir, timeout)

Emacs attaches to ``host:port`` the way a dap-mode user does for debugpy and walks
through ``dap_mode_e2e.el`` on ``target`` (tests/targets/scenario.py or a copy with the
same MARK-* comments). It knows nothing about what listens there: put a tap
(tests/_tap.py) in front to record the traffic, or a TLS forwarder to reach a TLS server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DRIVER = Path(__file__).with_name("dap_mode_e2e.el")
DEBIAN_ELPA = Path("/usr/share/emacs/site-lisp/elpa")


def missing_capability() -> str | None:
    """Why dap-mode cannot run on this machine, or None when it can."""
    if shutil.which("emacs") is None:
        return "emacs is not installed (apt-get install emacs-nox elpa-dap-mode; see scripts/bootstrap.sh)"
    if not any(DEBIAN_ELPA.glob("dap-mode-*")):
        return f"dap-mode is not installed under {DEBIAN_ELPA} (apt-get install elpa-dap-mode)"
    return None


@dataclass
class DapModeResult:
    returncode: int | None  # None: killed after the timeout
    ok: bool
    error: str | None
    checks: list[dict] = field(default_factory=list)
    log: str = ""  # everything Emacs printed

    def failed_checks(self) -> list[dict]:
        return [c for c in self.checks if not c["ok"]]

    def __str__(self) -> str:
        lines = [f"emacs rc={self.returncode} ok={self.ok} error={self.error}"]
        lines += [f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail'][:500]}" for c in self.checks]
        return "\n".join(lines) + "\n--- emacs output ---\n" + self.log[-6000:]


def run_dap_mode(host: str, port: int, target: Path, out_dir: Path, timeout: float = 120.0,
                 step_timeout: float = 20.0) -> DapModeResult:
    """Run one dap-mode session; returns its checks. Emacs is killed (by PID) on timeout."""
    reason = missing_capability()
    if reason:
        raise RuntimeError(reason)
    out_dir = Path(out_dir)
    home = out_dir / "emacs-home"
    # dap-mode saves breakpoints in HOME and restores them at start: every run gets a new one.
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    result_path = out_dir / "dap-mode-result.json"
    result_path.unlink(missing_ok=True)
    log_path = out_dir / "emacs.log"
    env = dict(os.environ, HOME=str(home), DAP_HOME=str(home), DAP_HOST=host, DAP_PORT=str(port),
               DAP_TARGET=str(Path(target).resolve()), DAP_RESULT=str(result_path),
               DAP_STEP_TIMEOUT_S=str(step_timeout))
    with open(log_path, "wb") as log:
        emacs = subprocess.Popen(["emacs", "--batch", "-Q", "-l", str(DRIVER)], stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=out_dir)
        try:
            returncode = emacs.wait(timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            if emacs.poll() is None:
                emacs.kill()
                emacs.wait(10)
    output = log_path.read_text(errors="replace")
    if not result_path.exists():
        return DapModeResult(returncode, False, f"dap-mode wrote no result within {timeout} s", log=output)
    result = json.loads(result_path.read_text())
    return DapModeResult(returncode, result["ok"] is True and returncode == 0, result.get("error"),
                         list(result.get("checks") or []), output)

"""Emacs dap-mode, a real editor client, attaches through the forwarder to a TLS listener with a secret.

dap-mode cannot speak TLS and knows nothing of secrets: it attaches to the forwarder on
loopback with the configuration its users write for debugpy. The forwarder verifies the
debuggee's certificate against the CA file and adds the secret.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from _e2e import target
from _tap import DAPTap
from dap_schema import assert_valid
from emacs.runner import missing_capability, run_dap_mode
from test_e2e_emacs import EXPECTED_CHECKS
from test_forwarder import ForwarderProcess
from test_security import SECRET, tls_files  # noqa: F401  (a fixture)

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(missing_capability() is not None, reason=str(missing_capability())),
]


class SecuredDebuggee:
    """`python -m fastattach --listen --certfile --keyfile --wait-for-client`, secret in the environment."""

    def __init__(self, script, certfile: str, keyfile: str, out_dir):
        self.stderr_path = out_dir / "secured-target.err"
        self.stdout_path = out_dir / "secured-target.out"
        env = dict(os.environ, FASTATTACH_SECRET=SECRET, PYTHONUNBUFFERED="1")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                 "--certfile", certfile, "--keyfile", keyfile, "--wait-for-client", str(script)],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        try:
            self.address = self._wait_listening(30)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"fastattach: listening on (\S+):(\d+)", self.stderr_path.read_text(errors="replace"))
            if match:
                return match.group(1), int(match.group(2))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the debuggee did not listen:\n{self.output()}")

    def output(self) -> str:
        return (f"--- stdout ---\n{self.stdout_path.read_text(errors='replace')}"
                f"--- stderr ---\n{self.stderr_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def test_dap_mode_through_forwarder_to_tls_listener_with_secret(tmp_path, tls_files, monkeypatch):  # noqa: F811
    script = target("scenario.py")
    # GIVEN a debuggee serving DAP over TLS that requires a secret
    debuggee = SecuredDebuggee(script, tls_files["cert"], tls_files["key"], tmp_path)
    forwarder = None
    try:
        # and a forwarder that trusts its certificate and knows the secret (from the environment)
        monkeypatch.setenv("FASTATTACH_SECRET", SECRET)
        forwarder = ForwarderProcess("{}:{}".format(*debuggee.address), "--cafile", tls_files["cert"])
        with DAPTap(("127.0.0.1", forwarder.port), tmp_path / "dap.jsonl") as tap:
            # WHEN dap-mode runs its whole scenario through the forwarder
            result = run_dap_mode(*tap.address, script, tmp_path, timeout=180)
            # THEN every step passed and the debuggee ran to its normal end
            assert result.ok, result
            assert [c["name"] for c in result.checks] == EXPECTED_CHECKS, result
            assert debuggee.process.wait(30) == 0, debuggee.output()
            assert "RESULT 20 21 63 40 10 alpha 33 True" in debuggee.stdout_path.read_text()
            tap.close()
        # dap-mode's attach carried no secret; the forwarder added it on the way
        attach = next(m for m in tap.messages("c2s") if m["type"] == "request" and m["command"] == "attach")
        assert "secret" not in attach.get("arguments", {})
        assert_valid(tap.records)
    finally:
        if forwarder is not None:
            forwarder.stop()
        debuggee.stop()

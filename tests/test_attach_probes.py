"""`python -m fastattach --pid PID --probes PATH`: a running process, attached by PID, watches a probe file.

Without --listen the target gets probes only (no listener, no debugpy import); with it, it
also listens, and the probe CLI sees the file's probes there. The target is a real process
attached by PID (the mailbox on 3.12/3.13, PEP 768 on 3.14+); the CLI runs as a subprocess.
Deadlines are generous bounds on waits, never measurements.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from targets.attach_harness import LINUX_X86_64_ONLY, Target, cleanup  # noqa: F401 (cleanup is a fixture)

pytestmark = LINUX_X86_64_ONLY

SERVICE = textwrap.dedent("""
    import logging, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s pid=%(process)d %(message)s")

    def handle(n):
        reply = n * 2  # PROBE

        return reply

    print("ready", flush=True)
    n = 0
    while True:
        handle(n)
        if n % 10 == 0:
            # (a copy: another thread may be importing)
            loaded = sorted(m for m in list(sys.modules) if m.split(".")[0] in ("debugpy", "pydevd", "_pydevd_bundle"))
            # (the attach imports fastattach on a thread of its own: the module may be half made)
            listening_address = getattr(sys.modules.get("fastattach._api"), "listening_address", None)
            listening = listening_address() if listening_address is not None else "no fastattach"
            print("tick", n, "listening:", listening, "debugger modules:", loaded, flush=True)
        n += 1
        time.sleep(0.01)
""")
PROBE_LINE = next(n for n, text in enumerate(SERVICE.splitlines(), 1) if text.endswith("# PROBE"))


def write_atomically(path, document) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)


def fastattach_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastattach", *args], capture_output=True, text=True,
                          timeout=timeout, env={key: value for key, value in os.environ.items()
                                                if key not in ("FASTATTACH_SECRET", "FASTATTACH_PROBES")})


@pytest.fixture
def service(tmp_path, cleanup):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    target = Target([sys.executable, "-u", str(script)])
    cleanup.append(target)
    return target, script


def probe_line(target) -> str:
    return target.wait_line(lambda text: text.startswith("fastattach.probe "), timeout=30)


def tick_with_fastattach(target) -> str:
    return target.wait_line(lambda text: text.startswith("tick ") and "no fastattach" not in text, timeout=30)


def test_pid_probes_alone_watches_the_file_with_no_listener_and_no_debugpy(service, tmp_path):
    # GIVEN a running service started without fastattach, and a probe file
    target, script = service
    probe_file = tmp_path / "probes.json"
    write_atomically(probe_file, {"probes": [{"id": "p1", "file": str(script), "line": PROBE_LINE,
                                              "log": "reply {n}"}]})
    # WHEN it is attached by PID with --probes alone
    out = fastattach_cli("--pid", str(target.pid), "--probes", str(probe_file))
    # THEN the attach reports what the target set, the target logs the probe's output
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"fastattach: PID {target.pid} watches {probe_file}: 1 probe set"
    assert probe_line(target).startswith(f"fastattach.probe pid={target.pid} reply ")
    # and it neither listens nor imported debugpy
    tick = tick_with_fastattach(target)
    assert tick.endswith("listening: None debugger modules: []"), tick
    # WHEN the file is edited: the probe is removed there
    write_atomically(probe_file, {"probes": []})
    # THEN the target says so, and the output stops (after the next tick: a hit under way at the
    # reload may still print)
    target.wait_line(lambda text: f"probe file {probe_file}: 0 probes set" in text and "1 removed" in text)
    target.wait_line(lambda text: text.startswith("tick "))
    followers = [target.wait_line(lambda text: True) for _ in range(30)]
    assert not [text for text in followers if text.startswith("fastattach.probe ")], followers
    target.assert_healthy()


def test_pid_probes_with_listen_serves_the_files_probes_to_the_probe_cli(service, tmp_path):
    target, script = service
    probe_file = tmp_path / "probes.json"
    write_atomically(probe_file, {"probes": [{"id": "from-file", "file": str(script), "line": PROBE_LINE,
                                              "log": "file {n}"}]})
    out = fastattach_cli("--listen", "127.0.0.1:0", "--pid", str(target.pid), "--probes", str(probe_file))
    assert out.returncode == 0, out.stderr
    listening, watching = out.stdout.strip().splitlines()
    assert listening.startswith("fastattach: listening on 127.0.0.1:") and listening.endswith(f" in PID {target.pid}")
    assert watching == f"fastattach: PID {target.pid} watches {probe_file}: 1 probe set"
    port = listening.split(":")[2].split()[0]
    assert probe_line(target).startswith(f"fastattach.probe pid={target.pid} file ")
    listed = fastattach_cli("probe", f"127.0.0.1:{port}", "--json", "list")
    assert listed.returncode == 0, listed.stderr
    assert [probe["id"] for probe in json.loads(listed.stdout)["probes"]] == ["from-file"]
    target.assert_healthy()


def test_pid_probes_reports_what_the_target_could_not_set(service, tmp_path):
    target, script = service
    missing = tmp_path / "not-there.json"
    out = fastattach_cli("--pid", str(target.pid), "--probes", str(missing))
    assert out.returncode == 0, out.stderr   # watched: its probes appear once the file does
    assert "0 probes set; the file is not usable (cannot read it:" in out.stdout and "watching it until" in out.stdout
    probe_file = tmp_path / "probes.json"
    write_atomically(probe_file, {"probes": [{"id": "blank", "file": str(script), "line": PROBE_LINE + 1,
                                              "log": "x"}]})
    out = fastattach_cli("--pid", str(target.pid), "--probes", str(probe_file))
    assert out.returncode == 0, out.stderr
    assert "0 probes set; not set: probe 'blank': line" in out.stdout and "has no code" in out.stdout
    tick = tick_with_fastattach(target)
    assert tick.endswith("listening: None debugger modules: []"), tick
    target.assert_healthy()


def test_pid_probes_needs_an_absolute_path_and_no_listener_options(service):
    target, _ = service
    relative = fastattach_cli("--pid", str(target.pid), "--probes", "probes.json")
    assert relative.returncode == 2 and "takes an absolute path, as the target sees it" in relative.stderr
    waiting = fastattach_cli("--pid", str(target.pid), "--probes", "/srv/probes.json", "--wait-for-client")
    assert waiting.returncode == 2 and "belong to --listen" in waiting.stderr
    target.assert_healthy()


def test_stop_by_pid_says_the_probes_run_on(service, tmp_path):
    target, script = service
    probe_file = tmp_path / "probes.json"
    write_atomically(probe_file, {"probes": [{"id": "p", "file": str(script), "line": PROBE_LINE, "log": "on {n}"}]})
    assert fastattach_cli("--pid", str(target.pid), "--probes", str(probe_file)).returncode == 0
    stopped = fastattach_cli("--pid", str(target.pid), "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "nothing to remove; its 1 probe keeps running" in stopped.stdout   # (the listener was never started)
    probe_line(target)
    target.assert_healthy()

"""Root attaching by PID to another user's process (a service user's): the attach works, and
that user, who controls the target and can race the attach, can never make root write,
chown or follow anything outside the attach's own files (issue 12 item 7).

These need root (to make a throwaway user and attach to its process) and an interpreter that
the user may run: one installed in root's home is not, Debian's in the sid chroot is.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid

import pytest
from targets.attach_harness import (  # noqa: F401 (cleanup is a fixture)
    ATTACH_TARGET,
    LINUX_X86_64_ONLY,
    Controller,
    Target,
    cleanup,
    debug_session,
    hit_line,
)

from fastattach.attach import AttachError, attach, watch_probes

pytestmark = LINUX_X86_64_ONLY


@pytest.fixture(scope="module")
def service_user():
    """(uid, gid) of a user made for these tests and removed after them."""
    if os.geteuid() != 0:
        pytest.skip("making a user and attaching to its process needs root")
    if not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("useradd (passwd) and setpriv (util-linux) are needed to run a process as another user")
    name = f"fa-svc-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a user here: {made.stderr.strip()}")
    try:
        import pwd
        entry = pwd.getpwnam(name)
        as_user = _as_user(entry.pw_uid, entry.pw_gid)
        runs = subprocess.run([*as_user, sys.executable, "-c", "import fastattach, debugpy"], capture_output=True,
                              text=True, timeout=60)
        if runs.returncode != 0:
            pytest.skip(f"{sys.executable} with fastattach cannot be run by another user here (its path is not "
                        f"readable by others): {runs.stderr.strip()[-300:]}")
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def _as_user(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


@pytest.fixture
def shared_dir():
    """A directory the service user can read (pytest's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="fa-test-shared-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_root_attaches_to_another_users_process(service_user, shared_dir, cleanup):
    # GIVEN a busy target running as a service user (on 3.14+ the attach goes through PEP 768,
    # whose script the target must be able to read: debugpy and memray fail here, gh-143511)
    uid, gid = service_user
    target = Target([*_as_user(uid, gid), sys.executable, "-u", str(ATTACH_TARGET), "busy", "300"],
                    env={"ATTACH_CONTROL_DIR": shared_dir}, cwd=shared_dir)
    cleanup.append(target)
    assert os.stat(f"/proc/{target.pid}").st_uid == uid
    # WHEN root attaches to it
    report = {}
    host, port = attach(target.pid, timeout=20, report=report)
    # THEN the loader ran as that user, and a full session works
    assert report["method"] == ("pep768" if sys.version_info >= (3, 14) else "mailbox")
    assert debug_session(host, port, Controller(target, "busy", shared_dir)).endswith(f"-{target.pid}")
    target.assert_healthy()


RACER = r"""
import glob, os, sys
victim, stop, temp = sys.argv[1], sys.argv[2], sys.argv[3]
names = ("s", "s.tmp", "s.claimed", "port", "port.error", "b", "b.tmp", "bootstrap.py", "bootstrap.py.tmp", "w")
count = 0
print("racing", flush=True)
while not os.path.exists(stop):
    for directory in glob.glob(os.path.join(temp, "fa-*")) + glob.glob(os.path.join(temp, "fa-*", "w")):
        if "fa-test-" in directory:
            continue
        for name in names:
            path = os.path.join(directory, name)
            link = f"{path}.{os.getpid()}.{count}"
            count += 1
            try:
                if count % 3:
                    os.symlink(victim, link)
                else:
                    os.mkfifo(link)
                os.replace(link, path)
            except OSError:
                try:
                    os.unlink(link)
                except OSError:
                    pass
"""


def test_a_racing_service_user_cannot_make_root_touch_other_files(service_user, shared_dir, cleanup, tmp_path):
    # GIVEN a root-owned file, and the target's user racing the attach: every name the attach
    # uses, in every attach directory, replaced again and again by a symlink to that file or
    # by a FIFO
    uid, gid = service_user
    victim = tmp_path / "precious"
    victim.write_text("root's own")
    victim.chmod(0o640)
    before = os.stat(victim)
    target = Target([*_as_user(uid, gid), sys.executable, "-u", str(ATTACH_TARGET), "busy", "300"],
                    env={"ATTACH_CONTROL_DIR": shared_dir}, cwd=shared_dir)
    cleanup.append(target)
    stop = os.path.join(shared_dir, "stop-racing")
    directories_before = _attach_directories()
    racer = subprocess.Popen([*_as_user(uid, gid), sys.executable, "-c", RACER, str(victim), stop,
                              tempfile.gettempdir()], stdout=subprocess.PIPE, text=True)
    try:
        assert racer.stdout.readline().strip() == "racing"
        # WHEN root attaches, several times, while it races
        outcomes = []
        for _ in range(8):
            try:
                attach(target.pid, timeout=3)
                outcomes.append("listening")
            except AttachError as exc:
                outcomes.append(exc.reason)
            # THEN the file is untouched after each attach: owner, mode and content
            after = os.stat(victim)
            assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
                before.st_uid, before.st_gid, stat.S_IMODE(before.st_mode)), outcomes
            assert victim.read_text() == "root's own"
    finally:
        open(stop, "w").close()
        racer.wait(30)
        racer.stdout.close()
    # and every attach either listened or failed with a reason; none left its directory
    # behind; the target, whatever the race did to its attaches, runs on
    assert set(outcomes) <= {"listening", "loader_failed", "timeout"}, outcomes
    assert _attach_directories() == directories_before
    target.assert_healthy()


def _attach_directories() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("fa-") and "fa-test-" not in name}


def test_an_unreachable_tmpdir_is_not_used_for_another_users_process(service_user, shared_dir, cleanup, tmp_path,
                                                                     monkeypatch):
    # GIVEN root's TMPDIR in a directory only root may enter, and a target of another user
    uid, gid = service_user
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    target = Target([*_as_user(uid, gid), sys.executable, "-u", str(ATTACH_TARGET), "busy", "300"],
                    env={"ATTACH_CONTROL_DIR": shared_dir}, cwd=shared_dir)
    cleanup.append(target)
    # WHEN root attaches, THEN the attach works from a directory the target can reach
    host, port = attach(target.pid, timeout=20)
    assert debug_session(host, port, Controller(target, "busy", shared_dir)).endswith(f"-{target.pid}")
    assert list(private.iterdir()) == []


def test_root_hands_over_only_the_probe_files_name_and_the_target_reads_it_as_itself(service_user, shared_dir,
                                                                                    cleanup):
    # GIVEN a target running as a service user, a probe file only root may read, and one the user may
    uid, gid = service_user
    target = Target([*_as_user(uid, gid), sys.executable, "-u", str(ATTACH_TARGET), "busy", "300"],
                    env={"ATTACH_CONTROL_DIR": shared_dir}, cwd=shared_dir)
    cleanup.append(target)
    hit = f'{{"probes": [{{"id": "hit", "file": "{ATTACH_TARGET}", "line": {hit_line()}, "log": "hit"}}]}}'
    root_only = os.path.join(shared_dir, "root-only.json")
    with open(root_only, "w") as f:
        f.write(hit)
    os.chmod(root_only, 0o600)
    readable = os.path.join(shared_dir, "readable.json")
    with open(readable, "w") as f:
        f.write(hit)
    os.chmod(readable, 0o644)
    # WHEN root attaches with each as --probes (probes only)
    # THEN the target could not read root's file (root never opened it for the target), and could read its own
    refused = watch_probes(target.pid, root_only, timeout=20)
    assert "0 probes set" in refused and "Permission denied" in refused, refused
    assert watch_probes(target.pid, readable, timeout=20).endswith(f"watches {readable}: 1 probe set")
    target.assert_healthy()

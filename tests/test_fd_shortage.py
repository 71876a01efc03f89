"""A transient file-descriptor shortage pauses the accept loop; it does not end it.

A real debuggee runs out of descriptors (it opens files up to its own RLIMIT_NOFILE) while
a client connects: the kernel queues the client, the listener logs that it cannot serve it,
and once the program frees its descriptors the same client is served, with a log line.
"""

from __future__ import annotations

import os
import re
import signal
import textwrap
import time

from _e2e import DebugServer

from fastattach.net.client import DAPClient

SERVICE = textwrap.dedent("""
    import os, resource, signal, time

    hog = []

    def exhaust(signum, frame):
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        try:
            while True:
                hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        print("EXHAUSTED", flush=True)

    def release(signum, frame):
        while hog:
            os.close(hog.pop())
        print("RELEASED", flush=True)

    signal.signal(signal.SIGUSR1, exhaust)
    signal.signal(signal.SIGUSR2, release)
    print("READY", flush=True)
    while True:
        time.sleep(0.02)
""")


def test_the_listener_serves_again_once_descriptors_are_free(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with DebugServer("fastattach", script, out_dir=tmp_path, wait_for_client=False) as server:
        server.wait_for_stdout("READY")
        # GIVEN a debuggee with no file descriptor left
        os.kill(server.process.pid, signal.SIGUSR1)
        server.wait_for_stdout("EXHAUSTED")
        # WHEN a client connects (the kernel queues it) and asks to initialize
        client = DAPClient.connect(*server.address)
        try:
            seq = client.send("initialize", {"adapterID": "debugpy", "clientID": "fd-shortage-test"})
            time.sleep(1.0)   # the accept loop meets the shortage meanwhile
            assert server.process.poll() is None
            # THEN once the program frees its descriptors, that same client is served
            os.kill(server.process.pid, signal.SIGUSR2)
            assert client.wait_response(seq, timeout=20)["success"]
            client.capabilities = {}
            client.attach()
            assert client.request("threads")["success"]
            assert re.search(r"(cannot|could not) serve new connections \(\[Errno 24\]", server.stderr())
            assert "serving new connections again" in server.stderr()
            assert "no more clients will be accepted" not in server.stderr()
        finally:
            client.close()

"""The listener and relay against a scripted pydevd on a socketpair (real sockets, real threads).

tests/test_server_pydevd.py runs the same relay against the real pydevd.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time

import pytest
from conftest import wait_until

from fastattach.net.client import DAPClient
from fastattach.net.handshake import initialize_response_body
from fastattach.net.listener import BUSY_MESSAGE, Listener, ListenError
from fastattach.net.wire import FrameDecoder, decode_message, encode_message


class FakePydevd:
    """Plays pydevd's side of the socketpair: answers like the in-process pydevd does.

    Its own seq numbers start at 1000, so the tests can see the relay renumber them.
    """

    def __init__(self):
        self.received: list[dict] = []
        self.opened = 0
        self.closed = threading.Event()
        self._sock: socket.socket | None = None
        self._seq = 999
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def open(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        self.opened += 1
        self._sock = theirs
        self.closed.clear()
        self.thread = threading.Thread(target=self._serve, args=(theirs,), daemon=True)
        self.thread.start()
        return ours

    def send(self, message: dict) -> None:
        with self._lock:
            self._seq += 1
            message = dict(message, seq=self._seq)
            self._sock.sendall(encode_message(message))

    def _respond(self, request: dict, body: dict | None = None) -> None:
        message = {"type": "response", "request_seq": request["seq"], "command": request["command"],
                   "success": True}
        if body is not None:
            message["body"] = body
        self.send(message)

    def _serve(self, sock: socket.socket) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for body in decoder.feed(data):
                    request = decode_message(body)
                    self.received.append(request)
                    command = request["command"]
                    if command == "initialize":
                        self._respond(request, {"supportsConfigurationDoneRequest": True})
                    elif command == "attach":
                        self.send({"type": "event", "event": "process", "body": {"name": "x"}})
                        self.send({"type": "event", "event": "initialized"})
                        self._respond(request)
                    elif command == "setBreakpoints":
                        lines = request["arguments"].get("lines", [])
                        self._respond(request, {"breakpoints": [{"verified": True, "line": n} for n in lines]})
                    else:
                        self._respond(request)
        except OSError:
            pass
        finally:
            self.closed.set()
            sock.close()

    def commands(self) -> list[str]:
        return [m["command"] for m in self.received]


@pytest.fixture
def fake():
    return FakePydevd()


@pytest.fixture
def make_listener(fake, closing):
    def make(host="127.0.0.1", **kwargs):
        kwargs.setdefault("open_backend", fake.open)
        return closing(Listener(host, 0, **kwargs))

    return make


@pytest.fixture
def clients(closing):
    def connect(listener, **kwargs):
        return closing(DAPClient.connect(*listener.address, **kwargs))

    return connect


def received_seqs(client) -> list[int]:
    return [m["seq"] for direction, m, _ in client.transcript if direction == "recv"]


def test_initialize_is_answered_before_pydevd_exists(make_listener, clients, fake):
    # GIVEN a listener whose backend has not been opened
    listener = make_listener()
    client = clients(listener)
    # WHEN the client initializes
    response = client.initialize()
    # THEN we answer with pydevd's capabilities, and pydevd is still not started
    body = response["body"]
    assert body["pydevd"] == {"processId": os.getpid()}
    assert body == initialize_response_body()
    assert body["supportsTerminateDebuggee"] and "supportTerminateDebuggee" not in body
    assert all(f["description"] for f in body["exceptionBreakpointFilters"])
    assert response["seq"] == 1
    assert fake.opened == 0
    assert not listener.client_connected


def test_attach_replays_initialize_and_renumbers_seq(make_listener, clients, fake):
    listener = make_listener()
    client = clients(listener)
    client.attach(breakpoints={"/tmp/x.py": [{"line": 3}]})
    # pydevd saw the client's own requests, in order and unchanged
    assert fake.commands()[:5] == ["initialize", "attach", "setBreakpoints", "setExceptionBreakpoints",
                                   "configurationDone"]
    sent = [m for d, m, _ in client.transcript if d == "send"]
    assert [m["seq"] for m in fake.received] == [m["seq"] for m in sent]
    assert "secret" not in fake.received[1]["arguments"]
    # the client saw one initialize response (ours) and one gap-free sequence
    responses = [m for d, m, _ in client.transcript if d == "recv" and m["type"] == "response"]
    assert [r["command"] for r in responses].count("initialize") == 1
    assert received_seqs(client) == list(range(1, len(received_seqs(client)) + 1))
    assert listener.client_connected
    assert listener.wait_configured(5)


def test_disconnect_is_relayed_and_a_new_client_can_attach(make_listener, clients, fake):
    listener = make_listener()
    first = clients(listener)
    first.attach()
    response = first.request("disconnect", {"restart": False})
    assert response["success"]
    wait_until(lambda: first.closed, what="the relay to close the first client")
    wait_until(lambda: not listener.client_connected, what="client_connected to drop")
    assert fake.commands()[-1] == "disconnect"
    assert not listener.wait_configured(0)
    # a new client after the first one left
    second = clients(listener)
    second.attach()
    assert fake.opened == 2
    assert received_seqs(second)[0] == 1


def test_vanishing_client_makes_pydevd_disconnect(make_listener, clients, fake):
    listener = make_listener()
    client = clients(listener)
    client.attach()
    last_seq = max(m["seq"] for m in fake.received)
    # WHEN the client disappears without a disconnect
    client.close()
    # THEN the relay sends pydevd a disconnect of its own and closes pydevd's end
    assert fake.closed.wait(10)
    disconnect = fake.received[-1]
    assert disconnect["command"] == "disconnect"
    assert disconnect["seq"] > last_seq
    assert disconnect["arguments"] == {"restart": False, "terminateDebuggee": False}
    wait_until(lambda: not listener.client_connected, what="client_connected to drop")


def test_send_event_is_numbered_in_the_client_stream(make_listener, clients, fake):
    listener = make_listener()
    listener.send_event("output", {"output": "nobody listens"})  # no client: a no-op
    client = clients(listener)
    client.attach()
    fake.send({"type": "event", "event": "output", "body": {"output": "from pydevd\n"}})
    listener.send_event("output", {"category": "console", "output": "from fastattach\n"})
    event = client.wait_event("output", predicate=lambda e: e["body"]["output"] == "from fastattach\n")
    assert event["type"] == "event"
    client.wait_event("output", predicate=lambda e: e["body"]["output"] == "from pydevd\n")
    seqs = received_seqs(client)
    assert seqs == list(range(1, len(seqs) + 1))


def test_send_event_from_many_threads_keeps_seq_unique(make_listener, clients, fake):
    listener = make_listener()
    client = clients(listener)
    client.attach()
    threads = [threading.Thread(target=lambda i=i: [listener.send_event("output", {"output": f"{i}.{k}"})
                                                  for k in range(50)]) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    wait_until(lambda: len([m for d, m, _ in client.transcript if d == "recv" and m.get("event") == "output"]) == 200,
               what="200 injected events")
    seqs = received_seqs(client)
    assert seqs == list(range(1, len(seqs) + 1))


def test_close_disconnects_client_and_pydevd(make_listener, clients, fake):
    listener = make_listener()
    client = clients(listener)
    client.attach()
    listener.close()
    assert fake.closed.wait(10)
    assert fake.commands()[-1] == "disconnect"
    wait_until(lambda: client.closed, what="the client connection to close")
    # (not probed by connecting: another test may already have been given that port)
    assert listener._sock.fileno() == -1
    assert not listener._accept_thread.is_alive()


def test_second_client_is_refused_and_first_undisturbed(make_listener, clients, fake):
    listener = make_listener()
    first = clients(listener)
    first.attach()
    second = clients(listener)
    response = second.request("initialize", {"adapterID": "debugpy"}, check=False)
    assert not response["success"]
    assert response["message"] == BUSY_MESSAGE
    wait_until(lambda: second.closed, what="the second client to be closed")
    assert first.request("threads")["success"]
    assert listener.client_connected
    assert fake.opened == 1


def test_idle_unauthenticated_connection_is_closed(make_listener, clients, caplog):
    listener = make_listener(auth_timeout=0.5)
    client = clients(listener)
    client.initialize()
    with caplog.at_level(logging.WARNING, logger="fastattach"):
        wait_until(lambda: client.closed, what="the idle connection to be closed")
        wait_until(lambda: "no attach within 0.5 s" in caplog.text, what="the log line")
    # the slot is free again
    other = clients(listener)
    other.attach()


def test_port_in_use_names_the_address(make_listener):
    listener = make_listener()
    host, port = listener.address
    with pytest.raises(ListenError) as error:
        Listener(host, port, open_backend=lambda: None)
    assert f"{host}:{port}" in str(error.value)
    assert "already in use" in str(error.value)
    assert error.value.errno == errno.EADDRINUSE


def test_port_zero_picks_a_free_port(make_listener):
    listener = make_listener()
    assert listener.address[0] == "127.0.0.1"
    assert listener.address[1] > 0


def test_one_marked_idle_thread(make_listener):
    # OS threads, not threading.enumerate(): once pydevd has been loaded (by an earlier test) it
    # hides threads marked as its own daemons from enumerate(), ours included.
    # Compared as sets: a relay thread of an earlier test may still be on its way out.
    before = set(os.listdir("/proc/self/task"))
    listener = make_listener()
    assert len(set(os.listdir("/proc/self/task")) - before) == 1
    thread = listener._accept_thread
    assert thread.is_alive() and thread.daemon
    assert thread.pydev_do_not_trace and thread.is_pydev_daemon_thread


def test_relay_sockets_use_tcp_nodelay(make_listener, fake):
    listener = make_listener()
    with socket.create_connection(listener.address, timeout=5) as raw:
        raw.sendall(encode_message({"seq": 1, "type": "request", "command": "initialize", "arguments": {}}))
        raw.recv(65536)
        server_side = listener._last_accepted._client
        assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_backend_failure_is_an_attach_error(make_listener, clients):
    def broken():
        raise RuntimeError("pydevd exploded")

    listener = make_listener(open_backend=broken)
    client = clients(listener)
    client.initialize()
    response = client.request("attach", {"name": "a"}, check=False)
    assert not response["success"]
    assert "pydevd exploded" in response["message"]
    wait_until(lambda: client.closed, what="the connection to close")


def test_flood_of_requests_after_attach_is_relayed_in_order(make_listener, clients, fake):
    listener = make_listener()
    client = clients(listener)
    client.attach()
    seqs = [client.send("threads") for _ in range(2000)]
    for seq in seqs:
        assert client.wait_response(seq, timeout=30)["success"]
    received = received_seqs(client)
    assert received == list(range(1, len(received) + 1))


def test_client_that_does_not_read_is_dropped(make_listener, fake, monkeypatch, caplog):
    from fastattach.net import relay as _relay
    monkeypatch.setattr(_relay, "MAX_PENDING_TO_CLIENT", 256 * 1024)
    listener = make_listener()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(listener.address)
        # GIVEN an attached client that never reads
        sock.sendall(encode_message({"seq": 1, "type": "request", "command": "initialize", "arguments": {}})
                     + encode_message({"seq": 2, "type": "request", "command": "attach", "arguments": {}}))
        wait_until(lambda: listener.client_connected, what="the attach")
        # WHEN pydevd keeps talking
        big = {"type": "event", "event": "output", "body": {"output": "x" * 60000}}
        with caplog.at_level(logging.WARNING, logger="fastattach"):
            for _ in range(400):
                if fake.closed.is_set():
                    break
                try:
                    fake.send(big)
                except OSError:
                    break
            # THEN the relay drops that client instead of buffering for it, and detaches pydevd
            assert fake.closed.wait(10)
        assert fake.commands()[-1] == "disconnect"
        assert "not reading" in caplog.text


def test_reconnect_right_after_disconnect_is_not_busy(make_listener, clients, fake):
    listener = make_listener()
    for _ in range(5):
        client = clients(listener)
        client.attach()
        client.request("disconnect", {"restart": False})
        client.close()  # and at once a new client, while the old session may still be detaching
    last = clients(listener)
    last.attach()
    assert fake.opened == 6


def test_a_port_probe_does_not_make_the_next_client_busy(make_listener, clients, fake):
    # GIVEN a connection that sends nothing (a port probe, a health check) still open
    listener = make_listener()
    probe = socket.create_connection(listener.address, timeout=5)
    wait_until(lambda: listener._last_accepted is not None, what="the probe to be accepted")
    # WHEN a client connects, and only then the probe goes away
    client = clients(listener)
    time.sleep(0.2)  # accepted by now, while the probe is open
    probe.close()
    # THEN the client is served, not told the process is busy
    client.attach()
    assert fake.opened == 1

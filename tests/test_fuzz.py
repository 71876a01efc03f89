"""Hypothesis fuzzing of the frame parser, the request gate, and the live listener.

Each test prints how many cases it ran (FASTATTACH_FUZZ_EXAMPLES scales them).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastattach.net.client import DAPClient
from fastattach.net.guessing import GuessLimiter
from fastattach.net.handshake import MAX_BODY_BYTES_BEFORE_ATTACH, MAX_MESSAGES_BEFORE_ATTACH, Handshake
from fastattach.net.listener import Listener
from fastattach.net.security import FailureThrottle
from fastattach.net.wire import MAX_HEADER_BYTES, FrameDecoder, ProtocolError, decode_message, encode_message

EXAMPLES = int(os.environ.get("FASTATTACH_FUZZ_EXAMPLES", "2000"))
SOCKET_EXAMPLES = max(50, EXAMPLES // 10)
SECRET = "fuzz-secret-5a1c0f"  # no strategy below can produce it

fuzz_settings = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.function_scoped_fixture])


class Counter:
    def __init__(self):
        self.cases = 0


@pytest.fixture
def report(capsys, request):
    counter = Counter()
    yield counter
    with capsys.disabled():
        print(f"\n[fuzz] {request.node.name}: {counter.cases} cases")


# -- strategies ------------------------------------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)
commands = st.one_of(st.sampled_from(["initialize", "attach", "launch", "disconnect", "threads", "evaluate",
                                      "setBreakpoints", "configurationDone", "continue", "terminate"]),
                     st.text(max_size=12))
requests = st.builds(
    lambda seq, command, arguments: {"seq": seq, "type": "request", "command": command,
                                     **({} if arguments is None else {"arguments": arguments})},
    st.integers(min_value=0, max_value=2**40), commands,
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["secret", "name", "connect", "justMyCode", "x"]),
                                         json_values, max_size=4)))
other_messages = st.one_of(
    st.builds(lambda seq, e: {"seq": seq, "type": "event", "event": e}, st.integers(0, 100), st.text(max_size=8)),
    st.builds(lambda seq, c: {"seq": seq, "type": "response", "request_seq": 1, "command": c, "success": True},
              st.integers(0, 100), commands))
messages = st.one_of(requests, requests, other_messages)


def frame(message) -> bytes:
    return encode_message(message)


garbage_frames = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, body: b"Content-Length: %d\r\n\r\n" % n + body, st.integers(0, 10**9), st.binary(max_size=200)),
    st.builds(lambda v: b"Content-Length: " + v + b"\r\n\r\n{}", st.binary(max_size=30)),
    st.builds(lambda body: b"Content-Length: %d\r\n\r\n" % len(body) + body, st.binary(max_size=200)),
    st.builds(lambda v: (lambda b: b"Content-Length: %d\r\n\r\n" % len(b) + b)(json.dumps(v).encode()), json_values),
    st.just(b"Content-Length: 99999999999999999999\r\n\r\n"),
    st.just(b"X" * (MAX_HEADER_BYTES + 10)),
    st.just(b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n"),
)
streams = st.lists(st.one_of(messages.map(frame), garbage_frames), max_size=8)


# -- the parser --------------------------------------------------------------------------------
@fuzz_settings
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_frame_decoder_accepts_or_refuses_any_bytes(report, data, cuts):
    report.cases += 1
    decoder = FrameDecoder(max_body_bytes=1024)
    pieces = [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)])]
    try:
        for piece in pieces:
            for body in decoder.feed(piece):
                assert len(body) <= 1024
                try:
                    decode_message(body)
                except ProtocolError:
                    pass
            # never more buffered than one header block plus one body
            assert decoder.buffered <= MAX_HEADER_BYTES + 4 + 1024 + len(piece)
    except ProtocolError as error:
        assert str(error)


@fuzz_settings
@given(batch=st.lists(messages, min_size=1, max_size=6), cut=st.integers(1, 50))
def test_frames_survive_any_split(report, batch, cut):
    report.cases += 1
    stream = b"".join(encode_message(m) for m in batch)
    decoder = FrameDecoder()
    bodies = []
    for i in range(0, len(stream), cut):
        bodies += decoder.feed(stream[i:i + cut])
    assert [decode_message(b) for b in bodies] == batch


@fuzz_settings
@given(value=json_values)
def test_decode_message_checks_types(report, value):
    report.cases += 1
    try:
        message = decode_message(json.dumps(value).encode())
    except ProtocolError:
        return
    assert isinstance(message, dict) and type(message["seq"]) is int and message["type"] in (
        "request", "response", "event")


# -- the request gate ----------------------------------------------------------------------------
@fuzz_settings
@given(sequence=st.lists(messages, max_size=MAX_MESSAGES_BEFORE_ATTACH + 4), with_secret=st.booleans())
def test_gate_never_admits_without_the_secret(report, sequence, with_secret):
    report.cases += 1
    gate = Handshake(SECRET if with_secret else None)
    initialized = False
    for count, message in enumerate(sequence, 1):
        step = gate.receive(message)
        if step.reply is not None:
            assert step.reply["type"] == "response" and step.reply["request_seq"] == message["seq"]
            assert "seq" not in step.reply  # the relay numbers it
            json.dumps(step.reply)
        # Past MAX_MESSAGES_BEFORE_ATTACH the gate closes without a reply, initialize or not.
        if message["type"] == "request" and message["command"] == "initialize" and step.reply is not None \
                and step.reply["success"]:
            initialized = True
        if step.start_session is not None:
            assert not with_secret, "admitted without the secret"
            assert initialized and message["command"] == "attach"
            assert "secret" not in step.start_session[1]["arguments"]
            assert count <= MAX_MESSAGES_BEFORE_ATTACH
            return
        if step.close:
            return
    assert len(sequence) <= MAX_MESSAGES_BEFORE_ATTACH


@fuzz_settings
@given(arguments=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_gate_admits_the_right_secret_with_any_other_arguments(report, arguments):
    report.cases += 1
    gate = Handshake(SECRET)
    gate.receive({"seq": 1, "type": "request", "command": "initialize"})
    step = gate.receive({"seq": 2, "type": "request", "command": "attach",
                         "arguments": {**arguments, "secret": SECRET}})
    assert step.start_session is not None
    assert step.start_session[1]["arguments"] == {k: v for k, v in arguments.items() if k != "secret"}


# -- the live listener, over real sockets ---------------------------------------------------------
class RecordingBackend:
    def __init__(self):
        self.opened = 0

    def open(self):
        self.opened += 1
        raise AssertionError("pydevd was reached without authentication")


@pytest.fixture(scope="module")
def hostile_target():
    backend = RecordingBackend()
    # Wrong secrets are part of the fuzz; a lockout or the listener's guess budget would keep
    # later cases from reaching the parser.
    throttle = FailureThrottle(first_delay=0.0)
    listener = Listener("127.0.0.1", 0, secret=SECRET, open_backend=backend.open, auth_timeout=2.0,
                        throttle=throttle, guess_limiter=GuessLimiter(rate=1e9, burst=10**9))
    yield listener, backend
    listener.close()


class ErrorCatcher(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def drain(sock: socket.socket, limit: float = 2.0) -> None:
    sock.settimeout(limit)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline and sock.recv(65536):
            pass
    except OSError:
        pass


def wait_session_done(listener: Listener, client_port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        session = listener._last_accepted
        if session is not None and session._peer[1] == client_port and session.finished:
            return
        assert time.monotonic() < deadline, "the hostile session never ended"
        time.sleep(0.002)


@settings(max_examples=SOCKET_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(stream=streams, vanish=st.booleans())
def test_listener_survives_hostile_streams(report, hostile_target, stream, vanish):
    report.cases += 1
    listener, backend = hostile_target
    catcher = ErrorCatcher()
    logging.getLogger("fastattach").addHandler(catcher)
    try:
        with socket.create_connection(listener.address, timeout=5) as sock:
            our_port = sock.getsockname()[1]
            for chunk in stream:
                try:
                    sock.sendall(chunk)
                except OSError:
                    break  # the listener already hung up on us, as it should
            if not vanish:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # already reset by the listener
                drain(sock)
        # the listener is still there for a well-behaved client, and never touched pydevd
        wait_session_done(listener, our_port)
        assert backend.opened == 0
        assert not catcher.records, [r.getMessage() for r in catcher.records]
    finally:
        logging.getLogger("fastattach").removeHandler(catcher)


def test_listener_still_serves_after_the_fuzz(hostile_target):
    listener, backend = hostile_target
    client = DAPClient.connect(*listener.address)
    try:
        assert client.initialize()["success"]
        response = client.request("attach", {"secret": "nope"}, check=False)
        assert "wrong secret" in response["message"]
    finally:
        client.close()
    assert backend.opened == 0


def test_max_body_before_attach_is_small():
    assert MAX_BODY_BYTES_BEFORE_ATTACH <= 64 * 1024

"""DAP wire format: Content-Length framing and message checks, with no I/O.

One decoder serves the listener (client -> pydevd), the relay's pydevd side, the
TLS forwarder and the test client, so every byte that crosses a socket of ours is
parsed by the same bounded code; ``frame`` is the only place a header is written, and
``response`` the only place a response is built.
"""

from __future__ import annotations

# json is imported by the functions that use it: a listener with no client yet must not pay
# its 1.5 MB.

# A header block longer than this is not DAP; refuse it before buffering more.
MAX_HEADER_BYTES = 4096
# Requests from real clients are small; setBreakpoints for a large file is a few KB.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

_SEPARATOR = b"\r\n\r\n"


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid DAP message.

    The message is written for the peer and the log: it names what was wrong
    without echoing untrusted bytes back.
    """


class FrameDecoder:
    """Turns a byte stream into message bodies; feed() raises ProtocolError on bad framing.

    After a ProtocolError the stream cannot be resynchronised and the caller closes it.
    """

    def __init__(self, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self._buffer = bytearray()
        self._body_length: int | None = None
        # Public so a reader can raise it once the peer has authenticated.
        self.max_body_bytes = max_body_bytes

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        bodies = []
        while True:
            if self._body_length is None:
                end = self._buffer.find(_SEPARATOR)
                if end < 0:
                    if len(self._buffer) > MAX_HEADER_BYTES:
                        raise ProtocolError(f"header block longer than {MAX_HEADER_BYTES} bytes")
                    return bodies
                if end > MAX_HEADER_BYTES:
                    raise ProtocolError(f"header block longer than {MAX_HEADER_BYTES} bytes")
                self._body_length = _parse_content_length(bytes(self._buffer[:end]), self.max_body_bytes)
                del self._buffer[: end + len(_SEPARATOR)]
            if len(self._buffer) < self._body_length:
                return bodies
            bodies.append(bytes(self._buffer[: self._body_length]))
            del self._buffer[: self._body_length]
            self._body_length = None


def _parse_content_length(header_block: bytes, max_body_bytes: int) -> int:
    try:
        text = header_block.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("header is not ASCII") from None
    length = None
    for line in text.split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError("malformed header line (no ':')")
        if name.strip().lower() == "content-length":
            value = value.strip()
            if not value.isdigit() or len(value) > 12:
                raise ProtocolError("Content-Length is not a non-negative integer")
            if length is not None and int(value) != length:
                # Two framings of one stream: a proxy in between might pick the other one.
                raise ProtocolError("conflicting Content-Length headers")
            length = int(value)
    if length is None:
        raise ProtocolError("missing Content-Length header")
    if length > max_body_bytes:
        raise ProtocolError(f"Content-Length {length} exceeds the limit of {max_body_bytes} bytes")
    return length


def decode_message(body: bytes) -> dict:
    """Parse one body into a DAP message dict, checking the fields every message must have."""
    import json

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("message body is not UTF-8") from None
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("message body is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object")
    seq = message.get("seq")
    if type(seq) is not int or seq < 0:
        raise ProtocolError("message 'seq' is not a non-negative integer")
    kind = message.get("type")
    if kind == "request":
        if not isinstance(message.get("command"), str):
            raise ProtocolError("request has no string 'command'")
        if "arguments" in message and not isinstance(message["arguments"], dict):
            raise ProtocolError("request 'arguments' is not an object")
    elif kind == "response":
        if not isinstance(message.get("command"), str) or type(message.get("request_seq")) is not int:
            raise ProtocolError("response lacks 'command' or integer 'request_seq'")
    elif kind == "event":
        if not isinstance(message.get("event"), str):
            raise ProtocolError("event has no string 'event'")
    else:
        raise ProtocolError("message 'type' is not request, response or event")
    return message


def frame(body: bytes) -> bytes:
    """Header and body in one buffer, so a single sendall() sends a whole message."""
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def encode_body(message: dict) -> bytes:
    """A message's JSON body, unframed."""
    import json

    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def encode_message(message: dict) -> bytes:
    return frame(encode_body(message))


def response(request: dict, *, body: dict | None = None, error: str | None = None) -> dict:
    """The response to `request`: a success with `body`, or a failure showing `error` to the user.

    It has no `seq`: whoever sends it numbers it in its own stream.
    """
    reply = {"type": "response", "request_seq": request.get("seq", 0), "command": request.get("command", ""),
             "success": error is None}
    if error is not None:
        reply["message"] = error
        reply["body"] = {"error": {"id": 1, "format": error, "showUser": True}}
    elif body is not None:
        reply["body"] = body
    return reply


def error_response(request: dict, message: str) -> dict:
    return response(request, error=message)

"""The pre-authentication state machine: what a client may do before its attach is accepted, with no I/O.

Until a client's `attach` carries the right secret, nothing it sends reaches pydevd, and
pydevd is not even imported. The listener answers `initialize` itself with the
capabilities pydevd would announce, so the client cannot tell the difference.
"""

from __future__ import annotations

import copy
import os
from typing import NamedTuple

from .security import secrets_match
from .wire import response

# fastattach's own request for always-on probes (add, list, remove): authenticated by its own
# secret as an attach is, answered by the listener itself, and never the start of a debugging
# session, so a probe client neither takes the client slot nor starts pydevd.
PROBES_COMMAND = "fastattachProbes"

# A client needs initialize, attach and perhaps a disconnect; anything chattier before
# authenticating is not a debugger.
MAX_MESSAGES_BEFORE_ATTACH = 16
# initialize and attach are a few hundred bytes; launch.json files with large pathMappings stay far below this.
MAX_BODY_BYTES_BEFORE_ATTACH = 64 * 1024

# What debugpy 1.8.22's in-process pydevd answers to `initialize`
# (_pydevd_bundle/pydevd_process_net_command_json.py, on_initialize_request), in its key
# order. tests/test_server_pydevd.py compares it with a live pydevd, so drift is caught.
PYDEVD_CAPABILITIES = {
    "supportsConfigurationDoneRequest": True,
    "supportsFunctionBreakpoints": True,
    "supportsConditionalBreakpoints": True,
    "supportsHitConditionalBreakpoints": True,
    "supportsEvaluateForHovers": True,
    "exceptionBreakpointFilters": [
        {"filter": "raised", "label": "Raised Exceptions", "default": False},
        {"filter": "uncaught", "label": "Uncaught Exceptions", "default": True},
        {"filter": "userUnhandled", "label": "User Uncaught Exceptions", "default": False},
    ],
    "supportsStepBack": False,
    "supportsSetVariable": True,
    "supportsRestartFrame": False,
    "supportsGotoTargetsRequest": True,
    "supportsStepInTargetsRequest": True,
    "supportsCompletionsRequest": True,
    "completionTriggerCharacters": [],
    "supportsModulesRequest": True,
    "additionalModuleColumns": [],
    "supportedChecksumAlgorithms": [],
    "supportsRestartRequest": False,
    "supportsExceptionOptions": True,
    "supportsValueFormattingOptions": True,
    "supportsExceptionInfoRequest": True,
    "supportTerminateDebuggee": True,
    "supportsDelayedStackTraceLoading": True,
    "supportsLoadedSourcesRequest": False,
    "supportsLogPoints": True,
    "supportsTerminateThreadsRequest": False,
    "supportsSetExpression": True,
    "supportsTerminateRequest": True,
    "supportsDataBreakpoints": False,
    "supportsReadMemoryRequest": False,
    "supportsDisassembleRequest": False,
    "supportsClipboardContext": True,
    "supportsDebuggerProperties": True,
}


# debugpy's adapter does not pass pydevd's answer on as it is (debugpy/adapter/clients.py,
# initialize_request): it spells supportsTerminateDebuggee right (pydevd writes
# "supportTerminateDebuggee"), and it describes each exception filter. Clients decide from
# this answer what to offer, so they get what they get from debugpy;
# tests/test_scenario_parity.py compares the two.
ADAPTER_FILTER_DESCRIPTIONS = {
    "raised": "Break whenever any exception is raised.",
    "uncaught": "Break when the process is exiting due to unhandled exception.",
    "userUnhandled": "Break when exception escapes into library code.",
}


def initialize_response_body() -> dict:
    """Our answer to `initialize`: pydevd's capabilities as debugpy's adapter presents them."""
    body = copy.deepcopy(PYDEVD_CAPABILITIES)
    body["supportsTerminateDebuggee"] = body.pop("supportTerminateDebuggee")
    for exception_filter in body["exceptionBreakpointFilters"]:
        exception_filter["description"] = ADAPTER_FILTER_DESCRIPTIONS[exception_filter["filter"]]
    body["pydevd"] = {"processId": os.getpid()}
    return body


class Step(NamedTuple):  # not a dataclass: dataclasses imports inspect and ast, 0.5 MB before any client
    """What the relay does with one client message before authentication.

    `reply` lacks its `seq`: the relay numbers everything it sends to the client.
    """
    reply: dict | None = None
    close: bool = False
    log: str | None = None
    auth_failed: bool = False
    # The client's initialize request and its attach request (secret removed), to replay to pydevd.
    start_session: tuple[dict, dict] | None = None
    # An authenticated fastattachProbes request (secret removed), for the listener to answer.
    probe_request: dict | None = None


def _quoted(command: str) -> str:
    """An untrusted command name made safe for a message and a log line: short, one line."""
    return repr(command[:40] + ("..." if len(command) > 40 else ""))


class Handshake:
    """Feeds on decoded client messages (see wire.decode_message) until one `attach` is accepted.

    ``busy``: another client holds the debugging session; every request but a probe request
    (which needs no `initialize`) is answered with this message, and the connection closed.
    """

    def __init__(self, secret: str | None, busy: str | None = None):
        self._secret = secret
        self._initialize: dict | None = None
        self._messages = 0
        self._busy = busy
        self.done = False

    def checks_secret(self, message: dict) -> bool:
        """Whether receive(message) would compare an offered secret with ours (a guess): an
        attach's, or a probe request's (which needs no initialize and is checked even when busy)."""
        if (self._secret is None or self.done or self._messages >= MAX_MESSAGES_BEFORE_ATTACH
                or message["type"] != "request" or not isinstance(message.get("arguments"), dict)
                or "secret" not in message["arguments"]):
            return False
        if message["command"] == PROBES_COMMAND:
            return True
        return message["command"] == "attach" and self._busy is None and self._initialize is not None

    def receive(self, message: dict) -> Step:
        if self.done:
            raise RuntimeError("the handshake is over; relay the message instead")
        self._messages += 1
        if self._messages > MAX_MESSAGES_BEFORE_ATTACH:
            return Step(close=True, log=f"more than {MAX_MESSAGES_BEFORE_ATTACH} messages without an attach")
        if message["type"] != "request":
            return Step(log=f"ignored a {message['type']} sent before attach")
        command = message["command"]
        if command == PROBES_COMMAND:
            return self._check_probe_request(message)
        if command == "disconnect":
            return Step(reply=response(message), close=True, log="disconnect before attach")
        if self._busy is not None:
            return Step(reply=response(message, error=self._busy), close=True, log=self._busy)
        if command == "initialize":
            if self._initialize is not None:
                return Step(reply=response(message, error="initialize was already received"))
            self._initialize = message
            return Step(reply=response(message, body=initialize_response_body()))
        if self._initialize is None:
            return Step(reply=response(message,
                                       error=f"{_quoted(command)} before 'initialize': send initialize first"),
                        close=True, log=f"{_quoted(command)} before initialize")
        if command == "launch":
            return Step(reply=response(message, error=(
                "fastattach cannot launch programs: the debuggee is already running; use an 'attach' "
                "configuration")))
        if command != "attach":
            return Step(reply=response(message, error=(
                f"{_quoted(command)} is not allowed before 'attach'")))
        return self._check_attach(message)

    def _check_attach(self, attach: dict) -> Step:
        forwarded, refusal = self._authenticated(attach, "your attach configuration")
        if refusal is not None:
            return refusal
        self.done = True
        return Step(start_session=(self._initialize, forwarded))

    def _check_probe_request(self, request: dict) -> Step:
        """A probe request carries the secret as an attach does, and is checked the same way; it
        needs no `initialize`. The connection stays in its handshake, so each probe request is
        authenticated anew, and a probe client never holds the debugging session."""
        forwarded, refusal = self._authenticated(request, "the probe request (--secret or FASTATTACH_SECRET)")
        return refusal if refusal is not None else Step(probe_request=forwarded)

    def _authenticated(self, request: dict, where: str) -> tuple[dict, Step | None]:
        """The request without its secret, and None; or a refusal that closes the connection."""
        arguments = request.get("arguments")
        # Arguments that are not an object have no secret; check_request refuses their shape.
        arguments = dict(arguments) if isinstance(arguments, dict) else ({} if arguments is None else arguments)
        offered = arguments.pop("secret", None) if isinstance(arguments, dict) else None
        command = request["command"]   # 'attach' or PROBES_COMMAND: ours to log
        if self._secret is not None:
            if offered is None:
                return request, Step(reply=response(request, error=(
                    f"this debuggee requires a secret: add \"secret\": \"...\" to {where}")),
                    close=True, auth_failed=True, log=f"{command} without a secret")
            if not isinstance(offered, str) or not secrets_match(self._secret, offered):
                return request, Step(reply=response(request, error=(
                    f"wrong secret: the \"secret\" in {where} does not match the debuggee's")),
                    close=True, auth_failed=True, log=f"{command} with a wrong secret")
        forwarded = dict(request)
        forwarded["arguments"] = arguments
        return forwarded, None

"""What debugpy's adapter adds on top of pydevd, done by the relay, which replaces the adapter.

A client written for debugpy talks to debugpy's adapter (debugpy/adapter/clients.py), not
to pydevd. The adapter rewrites a few requests, answers one itself, and tells the client
when the session is over. ``AdapterRules`` keeps one session's part of that, with no I/O:
the relay asks it what to do with each client request and each pydevd response, and what
to say when the debuggee's end goes away. docs/debugpy-compat.md lists every request and
event of debugpy's that clients rely on, and what fastattach does with it.
"""

from __future__ import annotations

import sys

from .wire import response

# Requests debugpy's adapter applies to every thread, whatever threadId the client sent
# (clients.py, pause_request and continue_request: `request.arguments["threadId"] = "*"`).
ALL_THREADS_REQUESTS = frozenset({"continue", "pause"})
# The adapter's own request, answered from pydevd's pydevdSystemInfo (debugpySystemInfo_request).
SYSTEM_INFO_REQUEST = "debugpySystemInfo"
PYDEVD_SYSTEM_INFO_REQUEST = "pydevdSystemInfo"

# debugpy's requests that only its adapter serves: the reason fastattach refuses each.
REFUSED_REQUESTS = {
    # None so far: every other request of debugpy's goes to pydevd, as the adapter sends it.
}

DEBUGGEE_GONE = "the debuggee ended before it answered"
# Requests whose asked-for outcome is the end itself: answered as done when the end comes first
# (pydevd's terminate calls os._exit() right after queueing its answer).
ENDING_REQUESTS = frozenset({"disconnect", "terminate"})


class AdapterRules:
    """One client session's adapter behaviour. Not thread-safe: the relay thread alone uses it."""

    def __init__(self):
        self._open: dict[int, str] = {}          # the client's unanswered requests: seq -> command
        self._system_info_seqs: set[int] = set()   # client debugpySystemInfo sent to pydevd as pydevdSystemInfo
        self.terminated_sent = False

    def request_from_client(self, request: dict) -> dict | str | None:
        """What to send pydevd for this client request: None (as it is), a rewritten request,
        or a str (refuse it with that message; nothing reaches pydevd)."""
        command = request["command"]
        self._open[request["seq"]] = command
        if command in REFUSED_REQUESTS:
            return REFUSED_REQUESTS[command]
        if command in ALL_THREADS_REQUESTS:
            # pydevd refuses a continue without threadId (a required argument) and ignores a
            # pause without one; the adapter means every thread by either.
            arguments = request.get("arguments") or {}
            if not isinstance(arguments, dict) or "threadId" in arguments:
                return None   # a malformed one is refused by its shape (request_shapes.py)
            return {**request, "arguments": {**arguments, "threadId": "*"}}
        if command == SYSTEM_INFO_REQUEST:
            self._system_info_seqs.add(request["seq"])
            return {**request, "command": PYDEVD_SYSTEM_INFO_REQUEST, "arguments": {}}
        return None

    def to_client(self, message: dict) -> dict:
        """A message on its way to the client (from pydevd or from us), as the adapter would send it."""
        kind = message["type"]
        if kind == "event" and message["event"] == "terminated":
            self.terminated_sent = True
        elif kind == "response":
            request_seq = message.get("request_seq")
            self._open.pop(request_seq, None)
            if request_seq in self._system_info_seqs and message.get("command") == PYDEVD_SYSTEM_INFO_REQUEST:
                self._system_info_seqs.discard(request_seq)
                message = self._system_info_response(message)
        return message

    @staticmethod
    def _system_info_response(pydevd_answer: dict) -> dict:
        """debugpy's answer: {"debugpy": {"version"}} and pydevd's process, platform, python
        and pydevd sections; with fastattach's version beside them."""
        body = {"debugpy": {"version": _version_of("debugpy")}}
        if pydevd_answer.get("success"):
            body.update(pydevd_answer.get("body") or {})
        body["fastattach"] = {"version": _version_of(__package__.partition(".")[0])}
        answer = {**pydevd_answer, "command": SYSTEM_INFO_REQUEST, "success": True, "body": body}
        answer.pop("message", None)
        return answer

    def goodbye(self, answered_by_pydevd: int | None = None) -> list[dict]:
        """What the client still needs once pydevd can no longer answer (the debuggee is
        exiting or gone, or the session is closing): an answer to each open request (a
        `continue` succeeded, as the adapter reports it when pydevd vanished first), then
        `terminated` if nobody sent it yet. The request `answered_by_pydevd` (the
        disconnect whose answer follows) is left to pydevd's answer. Asked again, it has
        nothing more to say."""
        messages = []
        for seq, command in sorted(self._open.items()):
            if seq == answered_by_pydevd:
                continue
            request = {"seq": seq, "command": command}
            if command == "continue":
                messages.append(response(request, body={"allThreadsContinued": True}))
            elif command in ENDING_REQUESTS:
                messages.append(response(request))
            else:
                messages.append(response(request, error=f"{command}: {DEBUGGEE_GONE}"))
        self._open.clear()
        self._system_info_seqs.clear()
        if not self.terminated_sent:
            messages.append(terminated_event())
            self.terminated_sent = True
        return messages


def terminated_event() -> dict:
    return {"type": "event", "event": "terminated", "body": {}}


def _version_of(module_name: str) -> str | None:
    # Both are loaded by now (pydevd runs inside debugpy's package): no import here.
    return getattr(sys.modules.get(module_name), "__version__", None)

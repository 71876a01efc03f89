"""`python -m fastattach probe HOST:PORT ...`: add, list and remove the probes of a listening process.

    python -m fastattach probe HOST:PORT [--secret S] [--json] [TLS options] add FILE:LINE
                               (--log MESSAGE | --snapshot) [--condition C] [--expires S] [--id ID]
    python -m fastattach probe HOST:PORT [...] list
    python -m fastattach probe HOST:PORT [...] remove ID

It connects as a DAP client does (same secret, same TLS), sends one `fastattachProbes`
request, which the process answers itself without starting the debugger, and disconnects.
The probes belong to the process: they stay after this command ends. Runs on the operator's
machine, never in the debuggee. Exit status: 0 done, 1 refused or failed (said on stderr),
2 a bad command line.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys

from .._address import parse_address
from .handshake import PROBES_COMMAND

PROG = "python -m fastattach probe"
CONNECT_TIMEOUT = 10.0
# The process compiles the probe's file to check its line: generous for a large module on a busy host.
REQUEST_TIMEOUT = 30.0


class ProbeCommandError(Exception):
    """Said on stderr, exit status 1."""


# The connection's options, accepted before and after the command (`probe H:P --json list` and
# `probe H:P list --json`); SUPPRESS keeps a subcommand from overwriting what came before it.
CONNECTION_DEFAULTS = {"secret": None, "json": False, "timeout": REQUEST_TIMEOUT, "tls": False, "cafile": None,
                       "fingerprint": None, "insecure": False, "server_name": None}


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    options.add_argument("--secret", help="the process's secret (prefer the FASTATTACH_SECRET environment "
                                          "variable: arguments show in ps)")
    options.add_argument("--json", action="store_true", help="print the process's answer as one JSON object")
    options.add_argument("--timeout", type=float, metavar="S",
                         help=f"seconds to wait for the process's answer ({REQUEST_TIMEOUT:g})")
    tls = options.add_argument_group("TLS (for a process listening with --certfile/--keyfile)")
    tls.add_argument("--tls", action="store_true",
                     help="connect over TLS, checking the certificate against the system trust store")
    trust = tls.add_mutually_exclusive_group()
    trust.add_argument("--cafile", help="TLS, checking the certificate against this CA (or self-signed) file")
    trust.add_argument("--fingerprint", metavar="SHA256",
                       help="TLS, accepting only the certificate with this SHA-256 fingerprint")
    trust.add_argument("--insecure", action="store_true",
                       help="TLS, accepting any certificate: encrypted, but open to a man in the middle")
    tls.add_argument("--server-name", help="the name to verify in the certificate (default: HOST)")
    return options


def _parser() -> argparse.ArgumentParser:
    connection = _connection_options()
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[connection],
        description="Add, list or remove always-on probes in a process that listens (fastattach.listen() or "
                    "python -m fastattach --listen). The probes belong to the process and stay after this "
                    "command disconnects. See docs/probes.md.",
        epilog="Exit status: 0 done; 1 refused or failed (nothing listening, wrong secret, a line with no "
               "code, an unknown id); 2 a bad command line.")
    parser.add_argument("server", metavar="HOST:PORT", help="where the process listens")
    commands = parser.add_subparsers(dest="command", required=True, metavar="(add | list | remove)")
    add = commands.add_parser("add", parents=[connection],
                              help="set a probe (a probe with the id of an existing one replaces it)",
                              description="Set a probe at FILE:LINE. FILE is absolute or relative to a "
                                          "sys.path entry of the process, and is resolved there.")
    add.add_argument("location", metavar="FILE:LINE")
    action = add.add_mutually_exclusive_group(required=True)
    action.add_argument("--log", metavar="MESSAGE",
                        help="log this message, with {expression} templates as in a logpoint")
    action.add_argument("--snapshot", action="store_true", help="log the stack and the locals of the top frames")
    add.add_argument("--condition", metavar="C", help="a Python expression: the probe acts only where it is true")
    add.add_argument("--expires", type=float, metavar="S", help="seconds until the probe expires (3600; 0 = never)")
    add.add_argument("--id", help="the probe's id (default: a new one)")
    commands.add_parser("list", parents=[connection], help="the process's probes")
    remove = commands.add_parser("remove", parents=[connection], help="remove a probe by its id")
    remove.add_argument("id")
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    options = parser.parse_args(argv)
    for name, default in CONNECTION_DEFAULTS.items():
        if not hasattr(options, name):
            setattr(options, name, default)
    if options.cafile or options.fingerprint or options.insecure:
        if sum(map(bool, (options.cafile, options.fingerprint, options.insecure))) > 1:
            parser.error("give one of --cafile, --fingerprint and --insecure")
    return options


def _location(text: str) -> tuple[str, int]:
    file, colon, line = text.rpartition(":")
    if not colon or not file or not line.isdigit() or int(line) < 1:
        raise ValueError(f"invalid probe location {text!r}: expected FILE:LINE, with a line number >= 1")
    return file, int(line)


def request_arguments(options: argparse.Namespace) -> dict:
    """The fastattachProbes request's arguments for the command line (without the secret)."""
    if options.command == "list":
        return {"command": "list"}
    if options.command == "remove":
        return {"command": "remove", "id": options.id}
    file, line = _location(options.location)
    arguments = {"command": "add", "file": file, "line": line}
    if options.log is not None:
        arguments["log"] = options.log
    else:
        arguments["snapshot"] = True
    for field in ("condition", "expires", "id"):
        if getattr(options, field) is not None:
            arguments[field] = getattr(options, field)
    return arguments


def _ssl_context_wanted(options: argparse.Namespace) -> bool:
    return bool(options.tls or options.cafile or options.fingerprint or options.insecure)


def _ssl_context(options: argparse.Namespace):
    """(context, pinned fingerprint), or (None, None) for plain DAP."""
    if not _ssl_context_wanted(options):
        return None, None
    from .security import client_ssl_context, normalize_fingerprint  # RSS: only for TLS

    pinned = normalize_fingerprint(options.fingerprint) if options.fingerprint else None
    return client_ssl_context(cafile=options.cafile, fingerprint=pinned, insecure=options.insecure), pinned


def _connect(host: str, port: int, options: argparse.Namespace) -> socket.socket:
    where = f"{host}:{port}"
    context, pinned = _ssl_context(options)
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        raise ProbeCommandError(f"nothing is listening on {where} (connection refused): start the process with "
                                f"fastattach.listen() or python -m fastattach --listen") from None
    except OSError as error:
        raise ProbeCommandError(f"cannot connect to {where}: {error.strerror or error}") from None
    if context is None:
        return sock
    from .security import check_fingerprint  # RSS: only for TLS

    try:
        tls = context.wrap_socket(sock, server_hostname=options.server_name or host)
        if pinned is not None:
            check_fingerprint(tls.getpeercert(binary_form=True), pinned)
        return tls
    except ssl.SSLCertVerificationError as error:
        sock.close()
        raise ProbeCommandError(f"refusing {where}: its TLS certificate did not verify ({error.verify_message}); "
                                f"pass its certificate or CA with --cafile, or pin it with --fingerprint") from None
    except (ssl.SSLError, OSError) as error:
        sock.close()
        raise ProbeCommandError(f"TLS with {where} failed ({error}); does the process listen with "
                                f"--certfile/--keyfile?") from None


def run(options: argparse.Namespace) -> dict:
    """Connect, send the one request, disconnect; the answer's body. ProbeCommandError otherwise."""
    from .client import DAPClient, DAPError  # RSS: none of the client before the command line is good
    from .security import resolve_secret  # RSS: as above

    host, port = parse_address(options.server, default_host=None)
    arguments = request_arguments(options)
    secret = resolve_secret(options.secret)
    if secret is not None:
        arguments["secret"] = secret
    client = DAPClient(_connect(host, port, options))
    try:
        try:
            # No initialize: a probe request needs none, and one would be refused while a debugger
            # client holds the process's debugging session (probe requests are still served then).
            answer = client.request(PROBES_COMMAND, arguments, timeout=options.timeout, check=False)
        except DAPError as error:
            hint = "" if _ssl_context_wanted(options) else (
                "; one that serves TLS needs --tls, --cafile or --fingerprint")
            raise ProbeCommandError(f"{host}:{port} did not answer: {error} "
                                    f"(is it a fastattach listener{hint}?)") from None
        if not answer.get("success"):
            raise ProbeCommandError(f"{host}:{port} refused: {answer.get('message') or 'no reason given'}")
        body = answer.get("body") or {}
        try:
            client.request("disconnect", {}, timeout=5.0, check=False)
        except DAPError:
            pass   # the answer is in; a disconnect that went unanswered changes nothing
        return body
    finally:
        client.close()


def _describe(probe: dict) -> str:
    action = f"log {probe['log']!r}" if probe.get("log") is not None else "snapshot"
    condition = f" if {probe['condition']}" if probe.get("condition") else ""
    expires_in = probe.get("expires_in")
    expiry = "never expires" if expires_in is None else f"expires in {expires_in:.0f} s"
    return f"{probe['id']}  {probe['path']}:{probe['line']}  {action}{condition}  ({expiry})"


def human_readable(command: str, body: dict) -> str:
    if command == "add":
        return f"set probe {_describe(body['probe'])}"
    if command == "remove":
        return f"removed probe {body['removed']}"
    probes = body.get("probes", [])
    if not probes:
        return "no probes"
    return "\n".join(_describe(probe) for probe in probes)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    options = parse_command_line(parser, argv)
    try:
        parse_address(options.server, default_host=None)
        if options.command == "add":
            _location(options.location)
    except ValueError as error:
        parser.error(str(error))
    try:
        body = run(options)
    except (ProbeCommandError, ValueError) as error:
        print(f"fastattach probe: {error}", file=sys.stderr)
        return 1
    print(json.dumps(body) if options.json else human_readable(options.command, body), flush=True)
    return 0

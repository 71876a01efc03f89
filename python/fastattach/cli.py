"""Command line, with `python -m debugpy`'s flags.

    python -m fastattach --listen [HOST:]PORT [--wait-for-client] [--log-to DIR] [--log-to-stderr]
                         [--configure-NAME VALUE]...
                         (script.py [args] | -m module [args] | -c code [args])
    python -m fastattach --listen [HOST:]PORT --pid PID
    python -m fastattach connect HOST:PORT --listen 127.0.0.1:LPORT [...]   (TLS forwarder)
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

from . import _options
from ._address import parse_address
from ._options import DEFAULTS

USAGE = (
    "python -m fastattach --listen [HOST:]PORT [--wait-for-client] [--log-to DIR] [--log-to-stderr]\n"
    "                     [--configure-NAME VALUE]... [--secret S]\n"
    "                     [--certfile F --keyfile F] [--allow-unauthenticated]\n"
    "                     [--production] [--logpoint-rate N] [--logpoint-bytes N] [--condition-rate N]\n"
    "                     [--condition-cpu F] [--budget-cooldown S] [--snapshot-rate N] [--snapshot-max-bytes N]\n"
    "                     [--probe-expiry S] [--probe-cpu F] [--pydevd-condition-rate N]\n"
    "                     (script.py [args] | -m module [args] | -c code [args] | --pid PID)\n"
    "       python -m fastattach --pid PID --stop\n"
    "       python -m fastattach --probes PATH [--listen [HOST:]PORT ...] (script.py [args] | -m module | -c code)\n"
    "       python -m fastattach connect HOST:PORT --listen 127.0.0.1:LPORT [...]"
)


# debugpy's switches that fastattach does not have: switch -> (takes a value, what fastattach
# does instead). Each is refused in one line with status 2, so that a debugpy command line
# never runs with a silent difference.
_NO_SUBPROCESSES = "fastattach does not debug subprocesses"
DEBUGPY_REFUSED = {
    "--connect": (True, "fastattach has no adapter to connect out to; use --listen [HOST:]PORT and attach "
                        "the client to it (python -m fastattach connect forwards a remote client over TLS)"),
    "--adapter-access-token": (True, "it belongs to --connect, which fastattach does not do; use --secret "
                                     "(or FASTATTACH_SECRET) to require a secret in the client's attach request"),
    "--parent-session-pid": (True, f"it ties a subprocess to its parent's session, and {_NO_SUBPROCESSES}"),
    "--disable-sys-remote-exec": (False, "--pid chooses its own delivery (PEP 768 on 3.14+, else its "
                                         "own injector) and has no switch for it"),
    "--linux-attach-prefer-lldb": (False, "--pid uses neither gdb nor lldb (it injects by itself)"),
}
EPILOG = ("--configure-NAME VALUE sets configure(NAME=VALUE); VALUE is read by the type of the option: "
          "true/false, a number, or text (debugpy's names: --configure-subProcess false, --configure-qt none). "
          "Refused, in one line with status 2: " + ", ".join(DEBUGPY_REFUSED) + ", '--' before the program, "
          "and the DEBUGPY_EXTRA_ARGV environment variable.")


# (flag, configure() option, type, help); each is also in _split_target's takes_value. The
# help ends with the option's default, from _options.DEFAULTS ("{default}").
_BUDGET_FLAGS = (
    ("--logpoint-rate", "logpoint_messages_per_second", float, "logpoint messages per second per logpoint ({default})"),
    ("--logpoint-bytes", "logpoint_bytes_per_second", float,
     "logpoint output bytes per second per logpoint ({default})"),
    ("--condition-rate", "condition_evaluations_per_second", float,
     "count cap on the condition evaluations fastattach makes, per second per breakpoint ({default}; 0 = none: "
     "time governs)"),
    ("--pydevd-condition-rate", "pydevd_condition_evaluations_per_second", float,
     "count cap on the conditions and hit conditions pydevd evaluates, per second per breakpoint ({default})"),
    ("--condition-cpu", "condition_cpu_fraction", float,
     "time a debugging session's breakpoint may take, as a fraction of one core ({default}; 0.1 = 10%%)"),
    ("--probe-cpu", "probe_cpu_fraction", float,
     "time a probe or production-mode breakpoint may take, as a fraction of one core ({default}; 0.01 = 1%%)"),
    ("--budget-cooldown", "budget_cooldown", float,
     "seconds a breakpoint stays paused after a budget trips ({default})"),
    ("--snapshot-rate", "snapshots_per_second", float, "production snapshots per second per breakpoint ({default})"),
    ("--snapshot-max-bytes", "snapshot_max_bytes", int, "size limit of one snapshot ({default})"),
    ("--probe-expiry", "production_expiry", float,
     "seconds after which a production breakpoint expires ({default}; 0 = never)"),
)


def budget_options(options: argparse.Namespace) -> dict:
    """The configure() options given on the command line."""
    chosen = {option: getattr(options, option) for _, option, _, _ in _BUDGET_FLAGS
              if getattr(options, option) is not None}
    if options.production:
        chosen["production"] = True
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastattach", usage=USAGE, add_help=True, epilog=EPILOG)
    parser.add_argument("-V", "--version", action="version", version=_version())
    parser.add_argument("--listen", metavar="[HOST:]PORT", type=parse_address_arg)
    parser.add_argument("--probes", metavar="PATH",
                        help="watch this JSON probe file (docs/probes.md); without --listen the program runs "
                             "with probes only (also FASTATTACH_PROBES=PATH)")
    parser.add_argument("--wait-for-client", action="store_true")
    parser.add_argument("--log-to", metavar="DIR", help="write debugpy's and pydevd's logs to this directory")
    parser.add_argument("--log-to-stderr", action="store_true",
                        help="log fastattach's and debugpy's own messages to stderr")
    parser.add_argument("--pid", type=int, help="attach to this running process instead of starting one")
    parser.add_argument("--stop", action="store_true",
                        help="with --pid: remove fastattach from that process (listener, client, pydevd's "
                             "callbacks) and say what was removed")
    parser.add_argument("--secret", help="require this secret in the client's attach request "
                                         "(prefer the FASTATTACH_SECRET environment variable: not visible in ps)")
    parser.add_argument("--certfile", help="serve DAP over TLS with this certificate (PEM)")
    parser.add_argument("--keyfile", help="private key for --certfile (PEM)")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="allow a non-loopback bind without a secret (anyone who can reach the port can run code)")
    budgets = parser.add_argument_group("budgets and production mode (see docs/production.md)")
    budgets.add_argument("--production", action="store_true",
                         help="breakpoints never suspend: a hit takes a bounded snapshot; "
                              "pause and stepping are refused")
    for flag, option, kind, text in _BUDGET_FLAGS:
        budgets.add_argument(flag, dest=option, type=kind, metavar="N",
                             help=text.format(default=f"{DEFAULTS[option]:g}"))
    target = parser.add_mutually_exclusive_group()
    target.add_argument("-m", dest="module", metavar="MODULE")
    target.add_argument("-c", dest="code", metavar="CODE")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def parse_address_arg(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _split_target(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our options end at the script, or just after `-m MODULE` / `-c CODE`; the rest is the target's argv."""
    takes_value = {"--listen", "--probes", "--log-to", "--pid", "--secret", "--certfile", "--keyfile",
                   *(flag for flag, _, _, _ in _BUDGET_FLAGS)}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-m", "-c"):
            return argv[: i + 2], argv[i + 2:]
        if arg in takes_value or arg.startswith("--configure-") or DEBUGPY_REFUSED.get(arg, (False,))[0]:
            i += 2
            continue
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        return argv[:i], argv[i:]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "connect":
        from .net import forwarder  # RSS: ssl and selectors only for the forwarder

        return forwarder.main(argv[1:])
    if os.environ.get("DEBUGPY_EXTRA_ARGV"):
        # debugpy reads more switches from it; ignoring it would run with a silent difference.
        print("fastattach: DEBUGPY_EXTRA_ARGV is debugpy's and not read by fastattach: put its switches "
              "on the command line, or unset it", file=sys.stderr)
        return 2
    ours, rest = _split_target(argv)
    try:
        ours, configured = _take_configure_switches(ours)
    except ValueError as exc:
        print(f"fastattach: {exc}", file=sys.stderr)
        return 2
    options = _parser().parse_args(["-h" if arg == "-?" else arg for arg in ours])
    if options.stop:
        if options.pid is None:
            _parser().error("--stop removes fastattach from a running process: give it --pid PID")
        if options.listen or rest or options.module or options.code:
            _parser().error("--pid PID --stop takes no --listen and no program")
        from . import attach  # RSS: cffi only for an attach

        return attach.cli_stop(options.pid, log_dir=options.log_to)
    probes_only = options.probes or os.environ.get("FASTATTACH_PROBES")
    if options.listen is None and (options.pid is not None or not probes_only):
        _parser().error("the following arguments are required: --listen (or --probes PATH to run with probes only)")
    host, port = options.listen or (None, None)

    if options.pid is not None:
        if rest or options.module or options.code:
            _parser().error("--pid attaches to a running process; do not also give a program to run")
        if options.log_to_stderr:
            _parser().error("--log-to-stderr logs a program started by this command; with --pid use --log-to DIR "
                            "(the attach and the target's loader write their log there)")
        if options.probes:
            _parser().error("--probes with --pid is not supported yet: in the running process call "
                            "fastattach.probes.watch(PATH), or start it with FASTATTACH_PROBES=PATH")
        if budget_options(options) or configured:
            _parser().error("--production, --configure-* and the budget flags apply to a program started by "
                            "this command; in a running process call fastattach.configure() instead")
        from . import attach  # RSS: cffi only for an attach

        return attach.cli_attach(host, port, options.pid, wait_for_client=options.wait_for_client,
                                 log_dir=options.log_to, secret=options.secret)

    if not (rest or options.module or options.code):
        _parser().error("give a program to run: script.py, -m module or -c code (or --pid PID)")

    import fastattach
    import fastattach.probes  # RSS: the probe API only once a program is run, not for --pid or connect

    if options.log_to:
        fastattach.configure(log_dir=os.path.abspath(options.log_to))
    if options.log_to_stderr:
        _log_to_stderr()
    try:
        fastattach.configure(**configured, **budget_options(options))
    except ValueError as exc:
        print(f"fastattach: {exc}", file=sys.stderr)
        return 2
    # The program's sys.argv and sys.path before listen(), as debugpy sets them: pydevd names
    # the process in its `process` event after sys.argv[0] when a client attaches, which
    # can be before the program starts (--wait-for-client).
    if not _prepare_program(options, rest):
        return 2
    # After sys.path has the program's directory: probe files name files relative to it.
    if options.probes:
        fastattach.probes.watch(options.probes)
    if options.listen is None:
        _api_session().watch_probes_from_environment()
        return _run_target(options, rest)
    try:
        bound_host, bound_port = fastattach.listen(
            (host, port), secret=options.secret, certfile=options.certfile, keyfile=options.keyfile,
            allow_unauthenticated=options.allow_unauthenticated,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"fastattach: {exc}", file=sys.stderr)
        return 2
    print(f"fastattach: listening on {bound_host}:{bound_port}", file=sys.stderr, flush=True)
    # A program written for debugpy runs unchanged: its debugpy.* calls are fastattach's.
    from . import _debugpy_shim  # RSS: a program started by `python -m fastattach` only

    _debugpy_shim.install()
    if options.wait_for_client:
        # Children stop at their first line too (see _subprocess.py), as this program waits.
        _api_session().children_stop_at_entry = True
        fastattach.wait_for_client()
    return _run_target(options, rest)


def _api_session():
    from ._api import session  # RSS: the session only once a program is run

    return session()


def _take_configure_switches(ours: list[str]) -> tuple[list[str], dict]:
    """`ours` without the `--configure-NAME VALUE` pairs, and those as configure() options.

    ValueError, in one line, for a debugpy switch we refuse, for '--' before the program
    (debugpy refuses it too: it is no switch of its), or for a bad NAME or VALUE.
    """
    remaining, configured = [], {}
    i = 0
    while i < len(ours):
        arg = ours[i]
        if arg in DEBUGPY_REFUSED:
            raise ValueError(f"{arg} is debugpy's and not supported: {DEBUGPY_REFUSED[arg][1]}")
        if arg == "--":
            raise ValueError("'--' before the program is not supported (nor by debugpy): "
                             "give the program right after the options; its own arguments follow it")
        if arg.startswith("--configure-"):
            if i + 1 == len(ours):
                raise ValueError(f"{arg}: missing <value>")
            name = arg.removeprefix("--configure-")
            configured[name] = _options.parse_text(name, ours[i + 1])
            i += 2
            continue
        remaining.append(arg)
        i += 1
    return remaining, configured


def _log_to_stderr() -> None:
    """--log-to-stderr: fastattach's logger at every level, and debugpy's log, to stderr."""
    import logging

    import fastattach

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logger = logging.getLogger("fastattach")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    fastattach.log_to(sys.stderr)


def _prepare_program(options, rest: list[str]) -> bool:
    """Set the program's sys.argv and sys.path; False (said on stderr) if its script is missing."""
    if options.code is not None:
        sys.argv = ["-c", *rest]
        sys.path.insert(0, "")
    elif options.module is not None:
        sys.path.insert(0, os.getcwd())
        sys.argv = [_module_origin(options.module), *rest]
    else:
        script, *script_args = rest
        if not os.path.exists(script):
            print(f"fastattach: can't open file {script!r}: no such file", file=sys.stderr)
            return False
        sys.argv = [script, *script_args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    return True


def _module_origin(module: str) -> str:
    """The file `-m module` runs, as debugpy finds it (which imports its parent package);
    the name itself if it cannot be found (running it then raises the real error)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except Exception:
        return module
    return spec.origin if spec is not None and spec.origin else module


def _run_target(options, rest: list[str]) -> int:
    """Run the program _prepare_program set up."""
    if options.code is not None:
        code = compile(options.code, "<string>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    elif options.module is not None:
        runpy.run_module(options.module, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(sys.argv[0], run_name="__main__")
    return 0

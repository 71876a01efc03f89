"""Runs measurements in fresh debuggee processes, with a real DAP client for each.

Each function here drives one kind of run (ratio, hit latency, start-up, soak) and
returns plain dicts for results.json.  A scenario whose set-up did not take effect
raises SetupNotEffective: the run is recorded as failed, never as a speed-up.
"""

from __future__ import annotations

import os
import time

# The test client: the harness's only import of it.
from ..net.client import DAPClient, DAPError
from .instructions import callgrind_prefix, estimated_cycles, remove_dumps, sample_events
from .lines import BreakpointPlan, choose_lines, inner_repeats
from .process import TargetError, TargetProcess
from .scenarios import (
    DEBUGGERS,
    FALSE_CONDITION,
    LOGPOINT_MESSAGE,
    NEVER_RUN_LINES,
    REFERENCE_SCENARIO,
    NotApplicable,
    ScenarioSetup,
    SupportFiles,
    probe_line,
    reference_breakpoint,
    scenario_setup,
)


class SetupNotEffective(RuntimeError):
    """The debugger did not do what the scenario asked: its timing would be a lie."""


class Settings:
    """Sizes of one harness invocation (--quick shrinks them)."""

    def __init__(self, *, quick: bool, clock: str = "cpu", callgrind_dir: str | None = None,
                 keep_dumps: bool = False):
        # "cpu": the debuggee's process CPU time (all its threads), which other
        # processes on a shared machine barely disturb; "wall": elapsed time;
        # "instructions": the main thread's instructions per sample, counted by
        # callgrind (fastattach.bench.instructions), its dumps kept in callgrind_dir.
        self.clock = clock
        self.callgrind_dir = callgrind_dir
        # Kept, the dumps can be compared function by function (callgrind_annotate).
        self.keep_dumps = keep_dumps
        if clock == "instructions" and callgrind_dir is None:
            raise ValueError("counting instructions needs a directory for callgrind's dumps")
        # callgrind runs everything, pydevd's start-up included, about 50x slower.
        self.slowdown = 60.0 if clock == "instructions" else 1.0
        self.sample_seconds = 0.02 if quick else 0.05   # baseline duration of one timed sample
        self.samples = 3 if quick else 5
        self.max_seconds = 0.5 if quick else 3.0         # per process; slow modes take fewer samples
        self.warmup = not quick                          # one untimed unit before the samples
        self.min_samples = 1 if quick else 2
        self.stop_timeout = 60.0 * self.slowdown         # a probe breakpoint must stop within this
        self.result_timeout = 600.0 * self.slowdown
        self.start_timeout = 120.0 * self.slowdown       # the debuggee is listening
        self.attach_timeout = 30.0 * self.slowdown
        self.latency_hits = 20
        self.startup_repeat = 1 if quick else 5


def _path_key(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


# -- profiling -------------------------------------------------------------------------

def profile_workload(python: str, workload: str, settings: Settings) -> dict:
    """Line counts of one unit in a fresh process, the lines chosen from them, and the unit size."""
    with TargetProcess(python, {"kind": "profile", "workload": workload}) as target:
        result = target.wait_record("result", 300)
        target.finish()
    plan = choose_lines(result["profile"])
    return {"plan": plan, "file": result["file"], "unit_seconds": result["unit_seconds"],
            "inner": inner_repeats(result["unit_seconds"], settings.sample_seconds)}


# -- DAP helpers -----------------------------------------------------------------------

def attach_client(address, breakpoints: dict[str, list[dict]], timeout: float = 30.0) -> tuple[DAPClient, float]:
    """Connects, attaches with ``breakpoints``, checks every one was verified.

    Returns the client and the attach latency (connect to attach response).
    """
    host, port = address
    started = time.monotonic()
    client = DAPClient.connect(host, port, timeout=timeout)
    try:
        results = client.attach(breakpoints=breakpoints, exception_filters=[], justMyCode=False, timeout=timeout)
        attach_seconds = time.monotonic() - started
        check_breakpoints_verified(breakpoints, results)
    except BaseException:
        client.close()
        raise
    return client, attach_seconds


def check_breakpoints_verified(requested: dict[str, list[dict]], results: dict[str, list[dict]]) -> None:
    for path, wanted in requested.items():
        answered = results.get(path, [])
        if len(answered) != len(wanted):
            raise SetupNotEffective(f"asked for {len(wanted)} breakpoints in {path}, "
                                    f"the server answered {len(answered)}")
        for breakpoint, answer in zip(wanted, answered):
            if not answer.get("verified"):
                raise SetupNotEffective(
                    f"the server did not verify the breakpoint at {path}:{breakpoint['line']} "
                    f"({answer.get('message', 'no message')})")


def logpoint_output_count(client: DAPClient) -> int:
    return sum(LOGPOINT_MESSAGE in event.get("body", {}).get("output", "") for event in client.events("output"))


def check_stop_at(client: DAPClient, path: str, line: int, timeout: float) -> int:
    """Waits for a stop at path:line; returns its thread id."""
    try:
        stopped = client.wait_stopped(timeout)
    except DAPError as error:
        raise SetupNotEffective(f"a breakpoint at {path}:{line} did not stop the debuggee: {error}") from None
    thread_id = stopped["threadId"]
    frame = client.top_frame(thread_id)
    where = (_path_key(frame.get("source", {}).get("path", "")), frame.get("line"))
    if where != (_path_key(path), line):
        raise SetupNotEffective(f"expected a stop at {path}:{line}, got {where[0]}:{where[1]}")
    return thread_id


def debugpy_adapter_rss(port: int) -> int | None:
    """RSS of debugpy's separate adapter process serving ``port``, if it can be found."""
    # Imported here, not at the top, so that importing the harness needs none of the
    # fastattach[bench] extra: the command checks for it first (dependencies.py).
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if "--for-server" not in cmdline or not any("adapter" in part for part in cmdline):
            continue
        try:
            # Asked for port 0, the adapter's command line does not name its port.
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in process.net_connections(kind="tcp")):
                return process.memory_info().rss
        except psutil.Error:
            continue
    return None


# -- ratio runs ------------------------------------------------------------------------

def run_scenario(python: str, workload: str, profile: dict, scenario, mode: str, setup: ScenarioSetup | None,
                 settings: Settings, plan: BreakpointPlan, rep: int = 0) -> dict:
    """One fresh process: set the scenario up, time the workload, check the set-up held.

    Counting instructions, every run of repetition ``rep`` gets the same string hash
    seed: random seeds move a run's count by up to ~2% (dict probing), which would
    swamp the differences being measured, while a different seed per repetition
    still shows how much the ratio depends on it.

    Returns the run's record; raises SetupNotEffective or TargetError on failure.
    """
    spec = {"kind": "bench", "workload": workload, "mode": mode, "inner": profile["inner"],
            "samples": settings.samples, "max_seconds": settings.max_seconds, "warmup": settings.warmup,
            "min_samples": settings.min_samples}
    if mode == "bdb":
        spec["bdb_file"], spec["bdb_line"], spec["bdb_condition"] = reference_breakpoint(plan)
    if mode == "coverage":
        spec["coverage_include"] = sorted({profile["file"], plan.hot_file})
    prefix, env = [], {}
    if settings.clock == "instructions":
        spec["count_instructions"] = True
        prefix = callgrind_prefix(settings.callgrind_dir, python)
        env["PYTHONHASHSEED"] = str(rep + 1)
    details: dict = {}
    with TargetProcess(python, spec, env=env, prefix=prefix) as target:
        ready = target.wait_record("ready", settings.start_timeout)
        details["rss_before_listen"] = ready["rss_before_listen"]
        details["rss_after_listen"] = ready["rss_after_listen"]
        client = None
        try:
            if mode in DEBUGGERS and setup.connect:
                client, details["attach_seconds"] = attach_client(ready["address"], setup.breakpoints,
                                                                  settings.attach_timeout)
                if mode == "debugpy":
                    details["adapter_rss"] = debugpy_adapter_rss(ready["address"][1])
            if setup is not None and setup.run_before_timing:
                target.send("run")
                target.wait_record("ran", settings.result_timeout)
                if client is not None and client.events("stopped"):
                    raise SetupNotEffective("the debuggee stopped while running attached: "
                                            "a never-hit breakpoint was hit")
            if mode in DEBUGGERS and setup.detach_before_timing:
                client.disconnect()
                client = None
                target.send("stop")
            else:
                target.send("go")
            result = target.wait_record("result", settings.result_timeout)
            details.update(rss_attached=result["rss_attached"], connected=result["connected"],
                           monitoring_after=result["monitoring"], filter_stats=result.get("filter_stats"))
            if mode == "fastattach" and client is not None and result.get("filter_stats") is None:
                raise SetupNotEffective("fastattach's breakpoint filter was not installed: "
                                        "pydevd ran unfiltered")
            if client is not None:
                check_setup_held(client, target, setup, details, settings.stop_timeout)
                client.disconnect()
                client = None
            if mode in DEBUGGERS and setup.detach_before_timing and result["connected"]:
                raise SetupNotEffective(f"{mode} still had a client after the detach")
            target.finish(timeout=20.0 * settings.slowdown)
        finally:
            if client is not None:
                client.close()
    if settings.clock == "instructions":
        events = sample_events(settings.callgrind_dir, target.pid)
        details["callgrind_pid"] = target.pid
        if not settings.keep_dumps:
            remove_dumps(settings.callgrind_dir, target.pid)
        if len(events) != len(result["times"]):
            raise TargetError(f"callgrind wrote {len(events)} dumps for {len(result['times'])} samples")
        details["sample_events"] = events
        details["sample_instructions"] = [sample["Ir"] for sample in events]
        # The samples of one run agree to ~0.05%: the fewest is as good as any.
        details["instructions"] = min(details["sample_instructions"])
        details["estimated_cycles"] = min(estimated_cycles(sample) for sample in events)
    # The fastest sample: a shared machine only ever adds time to a sample, never removes it.
    wall, cpu = min(result["times"]), min(result["cpu_times"])
    return {"times": result["times"], "cpu_times": result["cpu_times"], "wall_seconds": wall, "cpu_seconds": cpu,
            "seconds": wall if settings.clock == "wall" else cpu, **details}


def check_setup_held(client: DAPClient, target: TargetProcess, setup: ScenarioSetup, details: dict,
                     stop_timeout: float) -> None:
    """After timing: nothing stopped or was switched off, logpoints logged, a probe breakpoint stops."""
    if client.events("stopped"):
        raise SetupNotEffective("the debuggee stopped during timing: a never-hit breakpoint was hit")
    switched_off = [e["body"] for e in client.events("breakpoint")
                    if not e.get("body", {}).get("breakpoint", {}).get("verified", True)]
    if switched_off:
        message = switched_off[0]["breakpoint"].get("message", "no reason given")
        raise SetupNotEffective(f"the debugger switched a breakpoint off during timing ({message})")
    stats = details.get("filter_stats") or {}
    if stats.get("trips") or stats.get("budget_paused"):
        raise SetupNotEffective(f"fastattach's budget paused a breakpoint during timing ({stats})")
    if setup.expect_logpoint_output:
        details["logpoint_outputs"] = logpoint_output_count(client)
        if details["logpoint_outputs"] == 0:
            raise SetupNotEffective("the logpoint produced no output")
    if setup.probe is None:
        return
    path, line = setup.probe
    client.set_breakpoints(path, [{"line": line}])
    for other in setup.breakpoints:
        if _path_key(other) != _path_key(path):
            client.set_breakpoints(other, [])
    target.send("probe")
    thread_id = check_stop_at(client, path, line, timeout=stop_timeout)
    client.set_breakpoints(path, [])
    client.request("continue", {"threadId": thread_id})
    target.wait_record("probed", 60)
    details["probe_stopped"] = True


# -- other figures -----------------------------------------------------------------------

def run_latency(python: str, mode: str, settings: Settings, files: SupportFiles) -> dict:
    """Hit latency: the breakpoint line runs -> the client has the `stopped` event."""
    spec = {"kind": "latency", "mode": mode, "hits": settings.latency_hits, "probes_file": files.probes}
    line = probe_line("LATENCY_BREAK")
    with TargetProcess(python, spec) as target:
        ready = target.wait_record("ready", 120)
        client, attach_seconds = attach_client(ready["address"], {files.probes: [{"line": line}]})
        try:
            target.send("go")
            received = []
            for _ in range(settings.latency_hits):
                thread_id = check_stop_at(client, files.probes, line, timeout=settings.stop_timeout)
                received.append(_receipt_time(client, "stopped"))
                client.request("continue", {"threadId": thread_id})
            stamps = target.wait_record("result", 120)["stamps"]
            client.disconnect()
        finally:
            client.close()
        target.finish()
    return {"latencies": [r - s for r, s in zip(received, stamps)], "attach_seconds": attach_seconds}


def _receipt_time(client: DAPClient, event: str) -> float:
    """When the newest ``event`` arrived, from the client's transcript."""
    for direction, message, when in reversed(client.transcript):
        if direction == "recv" and message.get("type") == "event" and message.get("event") == event:
            return when
    raise SetupNotEffective(f"no {event} event in the transcript")


def run_startup(python: str, mode: str, pycache_dir: str) -> dict:
    """Import and listen cost before any client connects, in a fresh process.

    Bytecode is cached in ``pycache_dir`` (for every module, so the caller warms it with a
    run it discards): an installed package has its .pyc files, and compiling from source
    (an editable install under PYTHONDONTWRITEBYTECODE) would add the compiler's memory."""
    env = {"PYTHONPYCACHEPREFIX": pycache_dir, "PYTHONDONTWRITEBYTECODE": ""}
    with TargetProcess(python, {"kind": "startup", "mode": mode}, env=env) as target:
        result = target.wait_record("result", 120)
        target.finish()
    result.pop("kind", None)
    result.pop("received", None)
    if mode == "fastattach" and result["pydevd_imported"]:
        raise SetupNotEffective("fastattach imported pydevd before any client connected")
    return result


def run_soak(python: str, modes: tuple[str, ...], workload: str, files: SupportFiles, seconds: float,
             interval: float = 1.0, unique_names: int = 0) -> dict:
    """All modes side by side for ``seconds``: RSS sampled from outside every ``interval``.

    The modes run at the same time (memory, not speed, is measured).  The debuggers
    are attached with scenario 3's breakpoints, a false conditional breakpoint and a
    logpoint on the soak loop (once per iteration each): breakpoints in the workload's
    hot function would slow debugpy so much that it would churn far less code, and
    hide the growth this run is looking for.  ``unique_names`` of the 20 fresh functions of
    each iteration are compiled under a file name never used before (see
    target.soak_iteration).
    """
    import psutil  # here, not at the top: see debugpy_adapter_rss()

    curves: dict[str, dict] = {}
    targets: dict[str, TargetProcess] = {}
    clients: dict[str, DAPClient] = {}
    try:
        for mode in modes:
            targets[mode] = TargetProcess(python, {"kind": "soak", "mode": mode, "workload": workload,
                                                   "seconds": seconds, "probes_file": files.probes,
                                                   "unique_names": unique_names})
        for mode, target in targets.items():
            ready = target.wait_record("ready", 120)
            if mode in DEBUGGERS:
                requested = {
                    files.never_run: [{"line": line} for line in NEVER_RUN_LINES],
                    files.probes: [
                        {"line": probe_line("SOAK_CONDITION"), "condition": FALSE_CONDITION},
                        {"line": probe_line("SOAK_LOGPOINT"), "logMessage": LOGPOINT_MESSAGE}],
                }
                clients[mode], _ = attach_client(ready["address"], requested)
        started = time.monotonic()
        for target in targets.values():
            target.send("go")
        processes = {mode: psutil.Process(t.pid) for mode, t in targets.items()}
        for mode in modes:
            curves[mode] = {"t": [], "rss": []}
        deadline = started + seconds
        while time.monotonic() < deadline:
            now = time.monotonic()
            for mode, process in processes.items():
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                curves[mode]["t"].append(now - started)
                curves[mode]["rss"].append(rss)
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        for mode, target in targets.items():
            result = target.wait_record("result", 120)
            curves[mode]["iterations"] = result["iterations"]
        for mode, client in clients.items():
            curves[mode]["logpoint_outputs"] = logpoint_output_count(client)
            if curves[mode]["logpoint_outputs"] == 0:
                raise SetupNotEffective(f"{mode}: the soak logpoint produced no output")
            client.disconnect()
        clients.clear()
        for target in targets.values():
            target.finish()
    finally:
        for client in clients.values():
            client.close()
        for target in targets.values():
            target.__exit__(None, None, None)
    return {"seconds": seconds, "workload": workload, "unique_names": unique_names, "curves": curves}


# Errors that fail one run (recorded with its reason) without stopping the others.
RUN_ERRORS = (SetupNotEffective, TargetError, DAPError, OSError, NotApplicable)


def scenario_or_reference_setup(scenario, plan: BreakpointPlan, never_run_file: str) -> ScenarioSetup | None:
    if scenario == REFERENCE_SCENARIO:
        return None
    return scenario_setup(scenario, plan, never_run_file)


"""The debuggee side of one benchmark run: one fresh process per run.

The harness (``fastattach.bench.harness``) starts this file by path, not with
``-m``: the no-debugger baseline must not import fastattach, and every mode must pay
the same interpreter start-up.  Only the standard library is imported here, plus the
debugger (or reference tracer) the run's mode asks for.

Protocol: the run's spec is one JSON argument.  This process writes records as
``@@{json}`` lines on its original stdout (workloads may print freely; the harness
skips other lines) and takes one-word commands from stdin, so the harness decides
when the client is ready, when timing starts and when to check that a breakpoint
still stops.  EOF on stdin means the harness is gone: exit.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import runpy
import statistics
import sys
import threading
import time
import types

if __name__ == "__main__":
    # Run by path, sys.path[0] is this package directory: drop it so that nothing here
    # shadows a module a workload imports.
    del sys.path[0]

_record_stream = os.fdopen(os.dup(1), "w", buffering=1) if __name__ == "__main__" else sys.stdout

# pyperformance workloads whose default size makes one call much longer than a
# sample needs to be; the benchmark's own command-line flag shrinks it.
WORKLOAD_ARGS = {
    "nbody": ["--iterations", "2000"],
    "chaos": ["--iterations", "2000"],
    "raytrace": ["--width", "40", "--height", "40"],
}
DEFAULT_WORKLOADS = ("richards", "nbody", "chaos", "deltablue", "raytrace", "json_dumps", "regex_compile")


def emit(kind: str, **fields) -> None:
    fields["kind"] = kind
    _record_stream.write("@@" + json.dumps(fields) + "\n")
    _record_stream.flush()


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# -- workloads -----------------------------------------------------------------------

def pyperformance_benchmark_file(name: str) -> str:
    """Path of bm_<name>/run_benchmark.py in the installed pyperformance (not imported)."""
    spec = importlib.util.find_spec("pyperformance")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("pyperformance is not installed in this Python: pip install 'fastattach[bench]'")
    package_dir = list(spec.submodule_search_locations)[0]
    path = os.path.join(package_dir, "data-files", "benchmarks", f"bm_{name}", "run_benchmark.py")
    if not os.path.exists(path):
        raise LookupError(f"no pyperformance benchmark called {name!r} (looked for {path})")
    return path


class _CapturingRunner:
    """Stands in for pyperf.Runner: records the function the benchmark would time.

    pyperformance benchmarks build their inputs in ``__main__`` and hand the timed
    function to the runner, so running the file with this runner in place gives the
    exact call the benchmark measures, with the benchmark's own default arguments,
    without pyperf's worker processes.
    """

    captured: tuple | None = None

    def __init__(self, *args, **kwargs):
        self.metadata = {}
        self.argparser = argparse.ArgumentParser(add_help=False)

    def parse_args(self, args=None):
        return self.argparser.parse_args(_CapturingRunner.argv)

    def bench_func(self, name, func, *args, inner_loops=None):
        _CapturingRunner.captured = ("func", func, args)

    def bench_time_func(self, name, func, *args, inner_loops=None):
        _CapturingRunner.captured = ("time_func", func, args)

    def bench_command(self, *args, **kwargs):
        raise NotImplementedError("command benchmarks start other processes: not a debugger workload")

    bench_async_func = bench_func
    argv: list = []   # the benchmark's own flags, from WORKLOAD_ARGS


def _fake_pyperf() -> types.ModuleType:
    module = types.ModuleType("pyperf")
    module.Runner = _CapturingRunner
    module.perf_counter = time.perf_counter
    return module


def load_pyperformance_unit(name: str):
    """(file, unit) where unit() runs the benchmark's timed function once."""
    path = pyperformance_benchmark_file(name)
    _CapturingRunner.captured = None
    _CapturingRunner.argv = WORKLOAD_ARGS.get(name, [])
    saved_pyperf = sys.modules.get("pyperf")
    sys.modules["pyperf"] = _fake_pyperf()
    sys.path.insert(0, os.path.dirname(path))   # some benchmarks import helpers from their folder
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        del sys.path[0]
        if saved_pyperf is None:
            sys.modules.pop("pyperf", None)
        else:
            sys.modules["pyperf"] = saved_pyperf
    if _CapturingRunner.captured is None:
        raise LookupError(f"pyperformance benchmark {name!r} registered no function with its runner")
    how, func, args = _CapturingRunner.captured
    unit = (lambda: func(1, *args)) if how == "time_func" else (lambda: func(*args))
    reset = LEAKY_STATE_RESETS.get(name)
    if reset is not None:
        module_globals = getattr(func, "__func__", func).__globals__
        unit.reset_leaky_state = lambda: reset(module_globals)
    return path, unit


# Workloads that keep something from every run, and how to drop it between soak iterations,
# so the soak measures a workload that is flat by itself: richards appends its 6 tasks and
# 8 packets to a module-level list on every run and never clears it (~3 KB per run). The
# speed scenarios leave it as pyperformance runs it.
LEAKY_STATE_RESETS = {
    "richards": lambda module_globals: setattr(module_globals["taskWorkArea"], "taskList", None),
}


def is_script(workload: str) -> bool:
    """A user's script (a path), not the name of a pyperformance benchmark."""
    return workload.endswith(".py") or os.sep in workload


def load_workload(workload: str):
    """(file, unit) for a pyperformance name, or for a user's script path.

    A user's script is run as ``__main__`` once per unit, which is what running it
    from the command line does.
    """
    if is_script(workload):
        path = os.path.abspath(workload)
        if not os.path.exists(path):
            raise LookupError(f"workload script {path} does not exist")
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec")

        def run_script():
            exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
        return path, run_script
    return load_pyperformance_unit(workload)


def repeat_unit(unit, inner: int):
    def sample():
        for _ in range(inner):
            unit()
    return sample


def load_probes(path: str) -> types.ModuleType:
    """The harness-written module whose lines the latency and soak runs break on."""
    spec = importlib.util.spec_from_file_location("fastattach_bench_probes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# New code objects every iteration (the constant {i} differs), under names that repeat:
# a unique name would be interned, and interned strings are immortal, so the workload
# itself would grow ~1 KB per iteration.
_FRESH_CODE_TEMPLATE = "def fresh_{j}(x):\n    return x * {j} + {i}\n"


def soak_iteration(unit, soak_tick, iteration: int, unique_names: int = 0, name_folder: str = "") -> None:
    """One round of production-like churn: the workload, fresh code objects, a short thread.

    Fresh code objects and short-lived threads are what make debugpy's per-code
    caches grow (DESIGN.md, "Memory"). The first `unique_names` of the fresh functions are
    compiled under a file name (in name_folder, not created) never used before, as template
    engines, notebooks and code generators do; the interpreter itself keeps each such name
    (code file names are interned), so no debugger also grows about 70 bytes per name.
    """
    reset = getattr(unit, "reset_leaky_state", None)
    if reset is not None:
        reset()
    unit()
    namespace: dict = {}
    for j in range(20):
        source = _FRESH_CODE_TEMPLATE.format(i=iteration, j=j)
        if j < unique_names:
            exec(compile(source, os.path.join(name_folder, f"template_{iteration}_{j}.py"), "exec"), namespace)
        else:
            exec(source, namespace)
        namespace[f"fresh_{j}"](j)
    worker = threading.Thread(target=soak_tick, args=(iteration,))
    worker.start()
    worker.join()


# -- debuggers and references --------------------------------------------------------

# fastattach pauses a breakpoint whose conditions or log messages cost more than a
# budget; debugpy has no such limit.  To compare the cost of the same work, every
# evaluation and message must happen, so the harness lifts the budgets (0 = unlimited)
# and fails a run in which a breakpoint was paused anyway.
FASTATTACH_UNLIMITED_BUDGETS = {
    "condition_evaluations_per_second": 0, "pydevd_condition_evaluations_per_second": 0,
    "condition_cpu_fraction": 0, "probe_cpu_fraction": 0,
    "logpoint_messages_per_second": 0, "logpoint_bytes_per_second": 0,
}


class Debugger:
    """listen / is_connected / stop for the mode under test (none: all no-ops)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.module = None

    def listen(self, *, unlimited_budgets: bool = True):
        """unlimited_budgets: lift fastattach's budgets (for the speed scenarios, which must
        measure the filter, not the budget); the start-up figures use the defaults."""
        if self.mode == "debugpy":
            import debugpy
            self.module = debugpy
            return debugpy.listen(("127.0.0.1", 0))
        if self.mode == "fastattach":
            import fastattach
            self.module = fastattach
            if unlimited_budgets:
                fastattach.configure(**FASTATTACH_UNLIMITED_BUDGETS)
            return fastattach.listen(("127.0.0.1", 0))
        return None

    def is_connected(self) -> bool:
        return bool(self.module and self.module.is_client_connected())

    def wait_disconnected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_connected():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        if self.mode == "fastattach":
            self.module.stop()

    def filter_stats(self) -> dict | None:
        """fastattach's C filter counters (what it disabled, what it forwarded to pydevd),
        or None when the filter is not installed: then pydevd runs unfiltered."""
        if self.mode != "fastattach":
            return None
        return fastattach_filter_counters()


def fastattach_filter_counters() -> dict | None:
    """The counters of fastattach's C breakpoint filter, or None when it is not installed.

    The harness needs them to check that the filter sits in front of pydevd and that no
    budget paused a breakpoint during timing, and reports them.
    """
    import fastattach

    return fastattach.breakpoint_filter_stats()


def monitoring_state() -> dict:
    """Which sys.monitoring tools are registered, with their global event masks."""
    monitoring = sys.monitoring
    return {str(tool): {"name": monitoring.get_tool(tool), "events": monitoring.get_events(tool)}
            for tool in range(6) if monitoring.get_tool(tool) is not None}


class _BdbReference:
    """A settrace debugger (bdb) holding one breakpoint, set the way a user sets one."""

    def __init__(self, path: str, line: int, condition: str | None):
        import bdb

        class QuietBdb(bdb.Bdb):
            hits = 0

            def user_line(self, frame):
                QuietBdb.hits += 1
                self.set_continue()

        self.debugger = QuietBdb()
        error = self.debugger.set_break(path, line, cond=condition)
        if error:
            raise RuntimeError(f"bdb refused the breakpoint: {error}")

    def wrap(self, sample):
        def traced():
            self.debugger.runcall(sample)
        return traced


class _CoverageReference:
    """coverage.py measuring lines with its sys.monitoring core (COVERAGE_CORE=sysmon)."""

    def __init__(self, measured_files: list[str]):
        os.environ["COVERAGE_CORE"] = "sysmon"
        import coverage
        # The workloads live in site-packages and the standard library, which coverage
        # skips by default; name them, or coverage would measure nothing and cost nothing.
        self.coverage = coverage.Coverage(data_file=None, cover_pylib=True, include=measured_files)
        self.coverage.start()
        core = self.coverage._collector.tracer_name() if self.coverage._collector else "?"
        if "sysmon" not in core.lower() and "monitor" not in core.lower():
            self.coverage.stop()
            raise RuntimeError(f"coverage did not start its sysmon core (core: {core})")
        self.core = core


# -- the run kinds ---------------------------------------------------------------------

def read_command(expected: tuple[str, ...]) -> str:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)   # the harness is gone
    command = line.strip()
    if command not in expected:
        raise RuntimeError(f"expected one of {expected}, got {command!r}")
    return command


def counted_call(function):
    """``function()``, called from inside libffi's ``ffi_call`` (through ctypes), where the
    harness's callgrind counts instructions (fastattach.bench.instructions.SAMPLE_FUNCTION).

    libffi is a shared library, so its ``ffi_call`` keeps its name in every interpreter
    build, stripped ones included (Debian's 3.14 and 3.15 export no ``_PyEval_CallTracing``),
    and nothing else on this thread calls it while samples run. ctypes.pythonapi keeps the
    GIL and raises what ``function`` raised."""
    import ctypes

    call = ctypes.pythonapi.PyObject_CallNoArgs
    call.argtypes = (ctypes.py_object,)
    call.restype = ctypes.py_object
    return call(function)


def time_samples(sample, samples: int, max_seconds: float, warmup, min_samples: int = 2,
                 count_instructions: bool = False):
    """Times ``sample`` ``samples`` times, fewer once ``max_seconds`` of wall time is spent
    (at least ``min_samples``).  Returns (wall times, process CPU times) per sample.

    count_instructions: run each sample through counted_call, inside the function the
    harness's callgrind counts in (fastattach.bench.instructions)."""
    if warmup is not None:
        warmup()
    if count_instructions:
        timed = sample
        sample = lambda: counted_call(timed)  # noqa: E731
    wall, cpu = [], []
    started = time.perf_counter()
    for _ in range(samples):
        t0, c0 = time.perf_counter(), time.process_time()
        sample()
        c1, t1 = time.process_time(), time.perf_counter()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
        if len(wall) >= min_samples and t1 - started > max_seconds:
            break
    return wall, cpu


def run_bench(spec: dict) -> None:
    path, unit = load_workload(spec["workload"])
    sample = repeat_unit(unit, spec["inner"])
    mode = spec["mode"]
    debugger = Debugger(mode)
    rss_before_listen = rss_bytes()
    address = debugger.listen()
    emit("ready", pid=os.getpid(), address=address, file=path,
         rss_before_listen=rss_before_listen, rss_after_listen=rss_bytes(),
         monitoring=monitoring_state())

    command = read_command(("go", "stop", "run"))
    while command == "run":
        unit()
        emit("ran")
        command = read_command(("go", "stop", "run"))
    rss_attached = rss_bytes()
    connected = debugger.is_connected()
    if command == "stop":
        # Scenario 7: the client has detached; fastattach is also stopped.
        debugger.stop()
        if not debugger.wait_disconnected(10):
            raise RuntimeError("the debugger still reports a client after the client detached")
        connected = debugger.is_connected()

    reference = None
    if mode == "bdb":
        reference = _BdbReference(spec["bdb_file"], spec["bdb_line"], spec["bdb_condition"])
        sample = reference.wrap(sample)
    elif mode == "coverage":
        reference = _CoverageReference(spec["coverage_include"])

    times, cpu_times = time_samples(sample, spec["samples"], spec["max_seconds"], warmup=unit if spec["warmup"] else None,
                         min_samples=spec["min_samples"], count_instructions=spec.get("count_instructions", False))
    if mode == "coverage":
        reference.coverage.stop()
        measured = {os.path.realpath(f) for f in reference.coverage.get_data().measured_files()}
        missing = [f for f in spec["coverage_include"] if os.path.realpath(f) not in measured]
        if missing:
            raise RuntimeError(f"coverage did not measure {missing}")
    emit("result", times=times, cpu_times=cpu_times, rss_attached=rss_attached,
         connected=connected, monitoring=monitoring_state(), filter_stats=debugger.filter_stats(),
         reference_hits=getattr(getattr(reference, "debugger", None), "hits", None))

    while True:
        command = read_command(("probe", "quit"))
        if command == "quit":
            return
        unit()   # stops at the probe breakpoint the harness has just set
        emit("probed")


def run_latency(spec: dict) -> None:
    probes = load_probes(spec["probes_file"])
    debugger = Debugger(spec["mode"])
    address = debugger.listen()
    emit("ready", pid=os.getpid(), address=address)
    read_command(("go",))
    stamps: list[float] = []
    for _ in range(spec["hits"]):
        probes.latency_probe(stamps)
    emit("result", stamps=stamps)
    read_command(("quit",))


def run_startup(spec: dict) -> None:
    """Import and listen costs before any client connects, measured in this fresh process."""
    threads_before = threading.active_count()
    rss_before_import = rss_bytes()
    t0 = time.perf_counter()
    debugger = Debugger(spec["mode"])
    if spec["mode"] == "fastattach":
        import fastattach  # noqa: F401  (the import is what is timed)
    elif spec["mode"] == "debugpy":
        import debugpy  # noqa: F401
    import_seconds = time.perf_counter() - t0
    rss_after_import = rss_bytes()
    t0 = time.perf_counter()
    debugger.listen(unlimited_budgets=False)
    listen_seconds = time.perf_counter() - t0
    emit("result", import_seconds=import_seconds, listen_seconds=listen_seconds,
         rss_before_import=rss_before_import, rss_after_import=rss_after_import,
         rss_after_listen=rss_bytes(), threads_added=threading.active_count() - threads_before,
         pydevd_imported="pydevd" in sys.modules, monitoring=monitoring_state())


def run_soak(spec: dict) -> None:
    path, unit = load_workload(spec["workload"])
    probes = load_probes(spec["probes_file"])
    debugger = Debugger(spec["mode"])
    address = debugger.listen()
    emit("ready", pid=os.getpid(), address=address, file=path)
    read_command(("go",))
    deadline = time.monotonic() + spec["seconds"]
    iteration = 0
    next_report = 0.0
    while time.monotonic() < deadline:
        soak_iteration(unit, probes.soak_tick, iteration, spec.get("unique_names", 0),
                       os.path.join(os.path.dirname(spec["probes_file"]), "generated"))
        iteration += 1
        now = time.monotonic()
        if now >= next_report:
            emit("progress", iterations=iteration, rss=rss_bytes(), t=now)
            next_report = now + 1.0
    emit("result", iterations=iteration, rss=rss_bytes())
    read_command(("quit",))


def count_lines(run, excluded_files: set[str]) -> list[dict]:
    """Runs ``run()`` once and counts LINE events per code object.

    Returns, per code object that ran: file, function name, first line, every line
    that holds instructions (``co_lines``) and the counts of those that ran.
    """
    monitoring = sys.monitoring
    tool = next(t for t in range(5, 0, -1) if monitoring.get_tool(t) is None)
    # Keyed by id(): hashing a code object hashes its bytecode, too slow per event.
    counts: dict[int, dict[int, int]] = {}
    codes: dict[int, types.CodeType] = {}

    def on_line(code, line):
        per_code = counts.get(id(code))
        if per_code is None:
            per_code = counts[id(code)] = {}
            codes[id(code)] = code
        per_code[line] = per_code.get(line, 0) + 1

    monitoring.use_tool_id(tool, "fastattach-bench-profile")
    try:
        monitoring.register_callback(tool, monitoring.events.LINE, on_line)
        monitoring.set_events(tool, monitoring.events.LINE)
        run()
    finally:
        monitoring.set_events(tool, 0)
        monitoring.register_callback(tool, monitoring.events.LINE, None)
        monitoring.free_tool_id(tool)
    profile = []
    for code_id, per_line in counts.items():
        code = codes[code_id]
        filename = os.path.abspath(code.co_filename)
        if filename in excluded_files or code.co_filename.startswith("<"):
            continue
        profile.append({
            "file": filename, "function": code.co_qualname, "first_line": code.co_firstlineno,
            "lines": sorted({line for _, _, line in code.co_lines() if line is not None}),
            "counts": {str(line): n for line, n in per_line.items() if line is not None},
        })
    return profile


def run_profile(spec: dict) -> None:
    """Line counts of one unit, for the automatic choice of breakpoint lines."""
    path, unit = load_workload(spec["workload"])
    unit()   # warm caches and lazy imports, so the counts are the steady state
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        unit()
        times.append(time.perf_counter() - t0)
    excluded = {os.path.abspath(__file__)}
    emit("result", file=path, unit_seconds=statistics.median(times),
         profile=count_lines(unit, excluded_files=excluded))


RUN_KINDS = {"bench": run_bench, "latency": run_latency, "startup": run_startup,
             "soak": run_soak, "profile": run_profile}


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    try:
        RUN_KINDS[spec["kind"]](spec)
    except BaseException as error:
        if isinstance(error, SystemExit):
            raise
        emit("error", error=f"{type(error).__name__}: {error}")
        raise


if __name__ == "__main__":
    main(sys.argv[1:])

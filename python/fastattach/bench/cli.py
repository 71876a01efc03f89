"""python -m fastattach.bench: fastattach vs debugpy vs no debugger, side by side.

See docs/bench.md for what each scenario and figure means.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time

from . import dependencies, harness
from .lines import NoSuitableLine
from .report import (
    figures_table,
    headline_table,
    interpreter_versions,
    machine_info,
    markdown_report,
    noise_floor_line,
    ratio_table,
    results_md,
    targets_summary,
    write_chart,
)
from .scenarios import BASELINE, DEBUGGERS, REFERENCES, SCENARIOS, NotApplicable, write_support_files
from .schedule import interleave
from .stats import linear_slope, paired_differences, ratio_summaries, summarize
from .target import DEFAULT_WORKLOADS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BENCHMARKS_DIR = os.path.join(REPO_ROOT, "benchmarks")
BENCH_DOC = os.path.join(REPO_ROOT, "docs", "bench.md")
HEADLINE_START = "<!-- headline: written by python -m fastattach.bench -->"
HEADLINE_END = "<!-- end of headline -->"
QUICK_WORKLOAD = "richards"
SECTIONS = ("ratios", "latency", "startup", "soak")


# An interpreter's own library (a workload's hot file may be in the standard library):
# everything up to lib/pythonX.Y/ is where this machine installed that Python.  A path
# starts where no other path character comes before its slash.
_INTERPRETER_LIBRARY = re.compile(r"(?<![\w.-])/[^\s\"']*?/(lib/python3\.\d+/)")


def relative_paths(text: str, root: str) -> str:
    """``text`` with every path inside ``root`` made relative to it, and every path inside
    an interpreter's library written as ``<python>/lib/pythonX.Y/...``, so stored results
    name no directory of the machine they ran on."""
    inside_root = re.compile(r"(?<![\w.-])" + re.escape(root.rstrip(os.sep) + os.sep))
    return _INTERPRETER_LIBRARY.sub(r"<python>/\1", inside_root.sub("", text))


def relative_to(value, root: str):
    """``value`` (results, recursively: keys too) with relative_paths() applied to every
    string."""
    if isinstance(value, str):
        return relative_paths(value, root)
    if isinstance(value, dict):
        return {relative_to(key, root): relative_to(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_to(item, root) for item in value]
    return value


def publish(results: dict, results_json: str, results_md_path: str) -> None:
    """RESULTS.md (+ .png, + .json: the raw data it was made from); for benchmarks/RESULTS.md
    also the headline of docs/bench.md.

    Written even when runs failed: their rows say FAILED and carry no number.
    """
    directory = os.path.dirname(os.path.abspath(results_md_path))
    os.makedirs(directory, exist_ok=True)
    stem = os.path.splitext(os.path.basename(results_md_path))[0]
    write_chart(results, os.path.join(directory, stem + ".png"))
    kept_json = os.path.join(directory, stem + ".json")
    if os.path.abspath(results_json) != os.path.abspath(kept_json):
        shutil.copyfile(results_json, kept_json)
    with open(results_md_path, "w") as summary:
        summary.write(results_md(results, os.path.join(directory, "results"), chart=stem + ".png"))
    print(f"regenerated {results_md_path} (and {stem}.png, {stem}.json)")
    if os.path.abspath(results_md_path) == os.path.join(BENCHMARKS_DIR, "RESULTS.md") and os.path.exists(BENCH_DOC):
        update_headline(BENCH_DOC, results)
        print(f"updated the headline table in {BENCH_DOC}")


def republish(results_json: str, results_md_path: str) -> int:
    """--report-only: rebuild RESULTS.md from a stored run, e.g. after a new results/*.md fragment."""
    with open(results_json) as source:
        results = json.load(source)
    publish(results, results_json, results_md_path)
    return 0


def write_fragment_and_republish(fragment_path: str, text: str) -> None:
    """Writes a benchmarks/results/*.md fragment, then rebuilds RESULTS.md from the stored
    full run so that it carries the fragment."""
    os.makedirs(os.path.dirname(fragment_path), exist_ok=True)
    with open(fragment_path, "w") as out:
        out.write(text)
    print(f"wrote {fragment_path}")
    stored = os.path.join(BENCHMARKS_DIR, "RESULTS.json")
    if os.path.exists(stored):
        republish(stored, os.path.join(BENCHMARKS_DIR, "RESULTS.md"))


def update_headline(doc: str, results: dict) -> None:
    """Replaces the text between the headline markers of ``doc`` with this run's tables."""
    with open(doc) as source:
        text = source.read()
    start, end = text.find(HEADLINE_START), text.find(HEADLINE_END)
    if start < 0 or end < start:
        return
    body = "\n".join([
        "", f"Measured {results['date']} on {results['machine']['cpu']} ({results['machine']['cores']} cores) "
        f"with `{results['command']}`; full tables in benchmarks/RESULTS.md.", "",
        "Median ratio to no debugger (geometric mean over the workloads):", "",
        headline_table(results), "", noise_floor_line(results), "",
        "The overhead targets (per workload: benchmarks/RESULTS.md):", "",
        targets_summary(results), "",
        "Latency, memory and start-up:", "", figures_table(results), ""])
    with open(doc, "w") as out:
        out.write(text[:start + len(HEADLINE_START)] + "\n" + body + "\n" + text[end:])


def default_out_parent() -> str:
    """benchmarks/out in a checkout; installed from a wheel, the package's folder is no place
    for results, so fastattach-bench/ under the current directory."""
    if os.path.isdir(BENCHMARKS_DIR):
        return os.path.join(BENCHMARKS_DIR, "out")
    return os.path.abspath("fastattach-bench")


def default_pythons() -> list[str]:
    found = [os.path.join(REPO_ROOT, ".venv", v, "bin", "python") for v in ("3.12", "3.13")]
    found = [p for p in found if os.path.exists(p)]
    return found or [sys.executable]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m fastattach.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one workload, one repetition, this Python only (unless --python): under a minute")
    parser.add_argument("--workload", action="append", metavar="NAME|path.py",
                        help="a pyperformance benchmark name or your own script (repeatable); "
                             f"default: {', '.join(DEFAULT_WORKLOADS)}")
    parser.add_argument("--python", action="append", metavar="PY", help="interpreter to measure (repeatable); "
                        "default: .venv/3.12 and .venv/3.13 of the checkout")
    parser.add_argument("--out", metavar="DIR", help="where results.json, results.md and chart.png go "
                        "(default: benchmarks/out/<date> in a checkout, else fastattach-bench/<date>)")
    parser.add_argument("--repeat", type=int, help="interleaved repetitions (default 3; --quick 1)")
    parser.add_argument("--clock", choices=("cpu", "wall", "instructions"), default="cpu",
                        help="what a sample's cost is: the debuggee's process CPU time (default; robust on a "
                             "shared machine, counts every thread of the debuggee), wall time, or the main "
                             "thread's instructions counted by valgrind's callgrind (exact to ~0.01%%, ~50x "
                             "slower; only ratios are reported)")
    parser.add_argument("--keep-dumps", action="store_true",
                        help="with --clock instructions: keep callgrind's dumps in OUT/callgrind "
                             "(callgrind.PID.N, one per sample; results.json names each run's PID)")
    parser.add_argument("--modes", default=",".join(DEBUGGERS),
                        help="debuggers to compare with no debugger (default: debugpy,fastattach)")
    parser.add_argument("--references", default=",".join(REFERENCES),
                        help="outside references, or '' for none (default: bdb,coverage)")
    parser.add_argument("--scenarios", default=",".join(str(s) for s in SCENARIOS),
                        help="scenario numbers to run (default: all)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"parts of the run (default: {','.join(SECTIONS)})")
    parser.add_argument("--soak-seconds", type=float, help="soak duration (default 600; --quick 3)")
    parser.add_argument("--soak-workload", default=QUICK_WORKLOAD)
    parser.add_argument("--soak-unique-names", type=int, default=0, metavar="N",
                        help="of the soak's 20 fresh functions per iteration, compile N under a file name "
                             "never used before, as template engines and notebooks do (default 0)")
    parser.add_argument("--results-md", metavar="PATH",
                        help="also regenerate this RESULTS.md (default for a full run from a checkout: "
                             "benchmarks/RESULTS.md; never for --quick or a run narrowed by --python, "
                             "--workload, --modes, --references, --scenarios or --sections)")
    parser.add_argument("--report-only", metavar="RESULTS_JSON",
                        help="measure nothing: rebuild RESULTS.md (or --results-md), its chart and the "
                             "docs/bench.md headline from a stored results.json, e.g. benchmarks/RESULTS.json")
    args = parser.parse_args(argv)
    args.pythons = args.python or ([sys.executable] if args.quick else default_pythons())
    args.workloads = args.workload or ([QUICK_WORKLOAD] if args.quick else list(DEFAULT_WORKLOADS))
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.soak_seconds = args.soak_seconds if args.soak_seconds is not None else (3.0 if args.quick else 600.0)
    args.mode_list = tuple(m for m in args.modes.split(",") if m)
    args.reference_list = tuple(m for m in args.references.split(",") if m)
    args.scenario_list = [int(s) for s in args.scenarios.split(",") if s]
    args.section_list = [s for s in args.sections.split(",") if s]
    for name, chosen, allowed in (("mode", args.mode_list, DEBUGGERS), ("reference", args.reference_list, REFERENCES),
                                  ("scenario", args.scenario_list, tuple(SCENARIOS)),
                                  ("section", args.section_list, SECTIONS)):
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            parser.error(f"unknown {name}: {unknown} (choose from {list(allowed)})")
    # Only a full run replaces the published results: a partial one would overwrite them
    # with its few rows.
    full_run = (not args.quick and not args.python and not args.workload
                and all(parser.get_default(name) == getattr(args, name)
                        for name in ("modes", "references", "scenarios", "sections", "soak_unique_names")))
    if args.results_md is None and full_run and os.path.isdir(BENCHMARKS_DIR):
        args.results_md = os.path.join(BENCHMARKS_DIR, "RESULTS.md")
    return args


class Run:
    """Collects the records of one invocation and the failures among them."""

    def __init__(self, args, labels: dict[str, str]):
        self.args = args
        self.labels = labels     # interpreter path -> its version, the key used in the results
        self.runs: list[dict] = []
        self.failures: list[dict] = []

    def fail(self, where: str, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}".strip()
        self.failures.append({"where": where, "error": message})
        print(f"FAILED {where}: {message}", file=sys.stderr, flush=True)


# A debuggee that died before it could be measured (say, a source file caught
# half-written in a tree someone is editing) is started again; a set-up that did not
# take effect is never retried.
START_RETRIES = 2
RETRY_PAUSE_SECONDS = 5.0


def run_with_retries(measure, record: dict) -> dict:
    for attempt in range(START_RETRIES + 1):
        try:
            return measure()
        except harness.TargetError as error:
            if attempt == START_RETRIES:
                raise
            record.setdefault("retried_after", []).append(str(error).splitlines()[0])
            time.sleep(RETRY_PAUSE_SECONDS)
    raise AssertionError("unreachable")


def git_revision() -> str | None:
    try:
        return subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except OSError:
        return None


def profile_all(run: Run, settings) -> dict:
    profiles: dict[str, dict] = {}
    for python in run.args.pythons:
        label = run.labels[python]
        for workload in run.args.workloads:
            try:
                profile = harness.profile_workload(python, workload, settings)
            except (harness.TargetError, NoSuitableLine, OSError) as error:
                run.fail(f"{label} {workload} profile", error)
                continue
            profiles.setdefault(label, {})[workload] = profile
            plan = profile["plan"]
            print(f"[{label} {workload}] unit {profile['unit_seconds'] * 1e3:.1f} ms x{profile['inner']}; hottest "
                  f"{plan.hot_function}:{plan.hottest_line}; never-run line {plan.never_line}; "
                  f"logpoint {os.path.basename(plan.logpoint_file)}:{plan.logpoint_line}", flush=True)
    return profiles


def run_ratios(run: Run, settings, profiles: dict, never_run_file: str) -> None:
    args = run.args
    order = interleave(args.pythons, args.workloads, args.scenario_list, args.mode_list, args.reference_list,
                       args.repeat)
    for index, key in enumerate(order, 1):
        label = run.labels[key.python]
        profile = profiles.get(label, {}).get(key.workload)
        record = {"python": label, "workload": key.workload, "scenario": key.scenario, "mode": key.mode,
                  "rep": key.rep, "ok": False}
        where = f"{label} {key.workload} scenario {key.scenario} {key.mode} rep {key.rep}"
        if profile is None:
            continue
        plan = profile["plan"]
        try:
            setup = harness.scenario_or_reference_setup(key.scenario, plan, never_run_file)
        except NotApplicable as reason:
            record["not_applicable"] = str(reason)
            run.runs.append(record)
            continue
        started = time.monotonic()
        try:
            record.update(run_with_retries(lambda: harness.run_scenario(
                key.python, key.workload, profile, key.scenario, key.mode, setup, settings, plan, key.rep), record))
            record["ok"] = True
        except harness.RUN_ERRORS as error:
            record["error"] = f"{type(error).__name__}: {error}"
            run.fail(where, error)
        run.runs.append(record)
        if record["ok"] and "instructions" in record:
            print(f"[{index}/{len(order)}] {where}: fewest {record['instructions']:,} instructions of "
                  f"{len(record['sample_instructions'])} samples ({time.monotonic() - started:.1f} s)", flush=True)
        elif record["ok"]:
            print(f"[{index}/{len(order)}] {where}: best {record['cpu_seconds'] * 1e3:.2f} ms CPU, "
                  f"{record['wall_seconds'] * 1e3:.2f} ms wall of {len(record['times'])} samples "
                  f"({time.monotonic() - started:.1f} s)", flush=True)


def aggregate_ratios(run: Run, profiles: dict) -> tuple[dict, dict]:
    counted = run.args.clock == "instructions"
    ratios = ratio_summaries(run.runs, measure="instructions" if counted else "seconds")
    for record in run.runs:
        key = f"{record['python']}|{record['workload']}|{record['scenario']}|{record['mode']}"
        if record["mode"] == BASELINE:
            continue
        if "not_applicable" in record:
            ratios[key] = {"not_applicable": record["not_applicable"]}
        elif not record["ok"]:
            ratios[key] = {"failed": record.get("error", "")}

    def evaluations(record):
        profile = profiles[record["python"]][record["workload"]]
        return profile["plan"].hottest_line_hits * profile["inner"] if record["scenario"] == 5 else 0

    if counted:   # the cost per evaluation is reported in nanoseconds, which a count is not
        return ratios, {}
    costs = {"|".join(str(k) for k in key): summarize(v * 1e9 for v in values).to_json()
             for key, values in paired_differences(run.runs, evaluations).items()}
    return ratios, costs


def per_mode_figures(run: Run, latency: dict) -> tuple[dict, dict]:
    """Attach latency over every attach; RSS before/after listen and attached (scenario 2)."""
    attach: dict = {}
    rss: dict = {}
    for python, per_mode in latency.items():
        for mode, figures in per_mode.items():
            attach.setdefault(python, {}).setdefault(mode, []).append(figures["attach_seconds"])
    for record in run.runs:
        if not record["ok"]:
            continue
        python, mode = record["python"], record["mode"]
        if "attach_seconds" in record:
            attach.setdefault(python, {}).setdefault(mode, []).append(record["attach_seconds"])
        if record["scenario"] in (2, 1) and mode in (BASELINE, *DEBUGGERS):
            per = rss.setdefault(python, {}).setdefault(mode, {})
            per.setdefault("before_listen", []).append(record["rss_before_listen"])
            per.setdefault("after_listen", []).append(record["rss_after_listen"])
            if record["scenario"] == 2 or mode == BASELINE:
                per.setdefault("attached", []).append(record["rss_attached"])
            if record.get("adapter_rss"):
                per.setdefault("adapter", []).append(record["adapter_rss"])
    attach = {p: {m: summarize(v).to_json() for m, v in per.items()} for p, per in attach.items()}
    rss = {p: {m: {k: statistics.median(v) for k, v in fields.items()} for m, fields in per.items()}
           for p, per in rss.items()}
    return attach, rss


def run_latency_section(run: Run, settings, files) -> dict:
    latency: dict = {}
    for python in run.args.pythons:
        for mode in run.args.mode_list:
            label = run.labels[python]
            try:
                result = harness.run_latency(python, mode, settings, files)
            except harness.RUN_ERRORS as error:
                run.fail(f"{label} {mode} hit latency", error)
                continue
            latency.setdefault(label, {})[mode] = {**summarize(result["latencies"]).to_json(),
                                                   "all": result["latencies"],
                                                   "attach_seconds": result["attach_seconds"]}
            print(f"[{label} {mode}] hit latency median {statistics.median(result['latencies']) * 1e3:.1f} ms",
                  flush=True)
    return latency


def run_startup_section(run: Run, settings) -> dict:
    import tempfile

    samples: dict = {}
    with tempfile.TemporaryDirectory(prefix="fastattach-pycache-") as pycache_dir:
        for rep in range(-1, settings.startup_repeat):  # -1: warms the bytecode cache, discarded
            for python in run.args.pythons:
                for mode in (BASELINE, *run.args.mode_list):
                    label = run.labels[python]
                    try:
                        result = harness.run_startup(python, mode, pycache_dir)
                    except harness.RUN_ERRORS as error:
                        run.fail(f"{label} {mode} start-up", error)
                        continue
                    if rep >= 0:
                        samples.setdefault(label, {}).setdefault(mode, []).append(result)
    startup: dict = {}
    for label, per_mode in samples.items():
        for mode, results in per_mode.items():
            startup.setdefault(label, {})[mode] = {
                "import_seconds": statistics.median(r["import_seconds"] for r in results),
                "listen_seconds": statistics.median(r["listen_seconds"] for r in results),
                "rss_added": statistics.median(r["rss_after_listen"] - r["rss_before_import"] for r in results),
                "rss_added_by_import": statistics.median(r["rss_after_import"] - r["rss_before_import"]
                                                         for r in results),
                "threads_added": max(r["threads_added"] for r in results),
                "pydevd_imported": any(r["pydevd_imported"] for r in results),
                "monitoring": results[-1]["monitoring"],
                "n": len(results),
            }
    return startup


def run_soak_section(run: Run, files) -> dict:
    """The soak on every Python at once: it measures memory, so sharing the CPU is fine,
    and a 10-minute soak does not become 10 minutes per interpreter."""
    soak: dict = {}
    workload = run.args.soak_workload

    def soak_one(python: str) -> None:
        label = run.labels[python]
        try:
            result = harness.run_soak(python, (BASELINE, *run.args.mode_list), workload, files,
                                      run.args.soak_seconds, unique_names=run.args.soak_unique_names)
        except harness.RUN_ERRORS as error:
            run.fail(f"{label} soak", error)
            return
        summary = {}
        for mode, curve in result["curves"].items():
            points = list(zip(curve["t"], curve["rss"]))
            settled = [p for p in points if p[0] >= 0.1 * result["seconds"]] or points
            if settled:
                summary[mode] = {"start": settled[0][1], "end": settled[-1][1],
                                 "slope_mb_per_min": linear_slope(settled) * 60 / 1e6,
                                 "iterations": curve.get("iterations")}
        result["summary"] = summary
        soak[label] = result

    print(f"soak for {run.args.soak_seconds:.0f} s on {len(run.args.pythons)} Python(s) ...", flush=True)
    workers = [threading.Thread(target=soak_one, args=(python,)) for python in run.args.pythons]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {run.labels[p]: soak[run.labels[p]] for p in run.args.pythons if run.labels[p] in soak}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    missing = dependencies.missing_line(args)
    if missing:
        print(missing, file=sys.stderr)
        return dependencies.MISSING_STATUS
    if args.report_only:
        return republish(args.report_only, args.results_md or os.path.join(BENCHMARKS_DIR, "RESULTS.md"))
    started = time.monotonic()
    revision_at_start = git_revision()
    stamp = datetime.datetime.now(datetime.UTC)
    out = args.out or os.path.join(default_out_parent(), stamp.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    versions = {python: interpreter_versions(python) for python in args.pythons}
    labels = {python: versions[python]["python"] for python in args.pythons}
    run = Run(args, labels)
    settings = harness.Settings(quick=args.quick, clock=args.clock,
                                callgrind_dir=os.path.join(out, "callgrind") if args.clock == "instructions" else None,
                                keep_dumps=args.keep_dumps)
    files = write_support_files(os.path.join(out, "files"))

    profiles = profile_all(run, settings) if "ratios" in args.section_list else {}
    if "ratios" in args.section_list:
        run_ratios(run, settings, profiles, files.never_run)
    latency = run_latency_section(run, settings, files) if "latency" in args.section_list else {}
    startup = run_startup_section(run, settings) if "startup" in args.section_list else {}
    soak = run_soak_section(run, files) if "soak" in args.section_list else {}

    ratios, costs = aggregate_ratios(run, profiles)
    attach, rss = per_mode_figures(run, latency)
    results = {
        "command": "python -m fastattach.bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": stamp.isoformat(timespec="seconds"), "revision": {"start": revision_at_start, "end": git_revision()},
        "machine": machine_info({p: versions[p] for p in args.pythons}),
        "pythons": [labels[p] for p in args.pythons], "workloads": args.workloads,
        "scenarios": args.scenario_list if "ratios" in args.section_list else [],
        "clock": args.clock, "modes": list(args.mode_list), "references": list(args.reference_list) if "ratios" in args.section_list
        else [], "repeat": args.repeat, "quick": args.quick,
        "profiles": {label: {w: {**p, "plan": p["plan"].to_json()} for w, p in per.items()}
                     for label, per in profiles.items()},
        "ratios": ratios, "per_evaluation_ns": costs, "latency": latency, "attach": attach, "rss": rss,
        "startup": startup, "soak": soak, "runs": run.runs, "failures": run.failures,
        "elapsed_seconds": time.monotonic() - started,
    }
    if os.path.isdir(BENCHMARKS_DIR):
        results = relative_to(results, REPO_ROOT)
    with open(os.path.join(out, "results.json"), "w") as dump:
        json.dump(results, dump, indent=1)
    report = markdown_report(results)
    with open(os.path.join(out, "results.md"), "w") as table:
        table.write(report)
    write_chart(results, os.path.join(out, "chart.png"))
    print()
    print(ratio_table(results) if results["scenarios"] else "")
    print(f"\nresults: {out}/results.json, results.md, chart.png ({results['elapsed_seconds']:.0f} s)")
    if args.results_md:
        publish(results, os.path.join(out, "results.json"), args.results_md)
    if run.failures:
        print(f"\n{len(run.failures)} run(s) FAILED; see results.md. No ratio is reported for them.",
              file=sys.stderr)
        return 1
    return 0

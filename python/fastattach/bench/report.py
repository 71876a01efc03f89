"""Tables, chart and RESULTS.md from the harness's results dict."""

from __future__ import annotations

import glob
import os
import platform
import statistics
import subprocess

from .scenarios import DEBUGGERS, REFERENCE_SCENARIO, REFERENCES, SCENARIOS
from .stats import geometric_mean

REFERENCE_LABELS = {
    "bdb": "bdb (settrace), breakpoint as in scenario 4 (else 5)",
    "coverage": "coverage.py, COVERAGE_CORE=sysmon",
}
CLOCK_LABELS = {
    "cpu": "the debuggee's process CPU time per sample (all its threads; debugpy's separate adapter "
           "process is not counted)",
    "wall": "wall time per sample",
    "instructions": "the debuggee main thread's instructions per sample, counted by valgrind's callgrind "
                    "(the same for every repetition to ~0.01%, whatever else the machine runs; stalls such "
                    "as cache misses are not counted)",
}
# fastattach's overhead targets: (scenario, limit on the median ratio).
RATIO_TARGETS = {4: 1.05, 3: 1.02, 7: 1.01}
PER_EVALUATION_SPEEDUP_TARGET = 10.0


def _ratio(entry: dict | None) -> str:
    if entry is None:
        return "–"
    if "failed" in entry:
        return "FAILED"
    if "not_applicable" in entry:
        return "n/a"
    return f"{entry['median']:.2f}x ({entry['min']:.2f}–{entry['max']:.2f})"


def _mb(value) -> str:
    return "–" if value is None else f"{value / 1e6:.1f} MB"


def _ms(value) -> str:
    return "–" if value is None else f"{value * 1e3:.1f} ms"


def scenario_label(scenario) -> str:
    return f"{scenario}. {SCENARIOS[scenario]}" if scenario in SCENARIOS else str(scenario)


def ratio_table(results: dict) -> str:
    """Every row: Python, workload, scenario, then each mode's median ratio (min–max)."""
    ratios = results["ratios"]
    modes = [m for m in DEBUGGERS if m in results["modes"]]
    lines = ["| Python | workload | scenario | " + " | ".join(modes) + " |",
             "|---|---|---|" + "---|" * len(modes)]
    for python in results["pythons"]:
        for workload in results["workloads"]:
            for scenario in results["scenarios"]:
                cells = [_ratio(ratios.get(f"{python}|{workload}|{scenario}|{mode}")) for mode in modes]
                lines.append(f"| {python} | {workload} | {scenario_label(scenario)} | " + " | ".join(cells) + " |")
    references = [m for m in REFERENCES if m in results["references"]]
    if references:
        lines += ["", "Outside references (same workloads, no debugger attached):", "",
                  "| Python | workload | " + " | ".join(REFERENCE_LABELS[m] for m in references) + " |",
                  "|---|---|" + "---|" * len(references)]
        for python in results["pythons"]:
            for workload in results["workloads"]:
                cells = [_ratio(ratios.get(f"{python}|{workload}|{REFERENCE_SCENARIO}|{mode}")) for mode in references]
                lines.append(f"| {python} | {workload} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_table(results: dict) -> str:
    """Per scenario and Python: geometric mean over workloads of each mode's median ratio."""
    ratios = results["ratios"]
    modes = [m for m in DEBUGGERS if m in results["modes"]]
    header = ["scenario"] + [f"{mode} {python}" for python in results["pythons"] for mode in modes]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for scenario in results["scenarios"]:
        cells = [scenario_label(scenario)]
        for python in results["pythons"]:
            for mode in modes:
                medians = [e["median"] for w in results["workloads"]
                           if (e := ratios.get(f"{python}|{w}|{scenario}|{mode}")) and "median" in e]
                cells.append(f"{geometric_mean(medians):.2f}x" if medians else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(results: dict) -> str:
    """The overhead numbers: fastattach against its targets, debugpy for contrast."""
    ratios = results["ratios"]
    lines = ["| Python | figure | fastattach | debugpy | target | met |", "|---|---|---|---|---|---|"]
    for python in results["pythons"]:
        for scenario, limit in RATIO_TARGETS.items():
            for workload in results["workloads"]:
                fast = ratios.get(f"{python}|{workload}|{scenario}|fastattach")
                slow = ratios.get(f"{python}|{workload}|{scenario}|debugpy")
                met = "–" if not fast or "median" not in fast else ("yes" if fast["median"] <= limit else "NO")
                lines.append(f"| {python} | {scenario_label(scenario)}, {workload} | {_ratio(fast)} | "
                             f"{_ratio(slow)} | <= {limit}x | {met} |")
        for workload in results["workloads"]:
            costs = results["per_evaluation_ns"]
            fast = costs.get(f"{python}|{workload}|5|fastattach")
            slow = costs.get(f"{python}|{workload}|5|debugpy")
            if fast and slow:
                speedup = slow["median"] / fast["median"] if fast["median"] > 0 else float("inf")
                met = "yes" if speedup >= PER_EVALUATION_SPEEDUP_TARGET else "NO"
                lines.append(f"| {python} | false condition, per evaluation, {workload} | {fast['median']:.0f} ns "
                             f"| {slow['median']:.0f} ns | >= {PER_EVALUATION_SPEEDUP_TARGET:.0f}x cheaper "
                             f"| {met} ({speedup:.1f}x) |")
        startup = results.get("startup", {}).get(python, {}).get("fastattach")
        if startup:
            lines.append(f"| {python} | before any client: import time / RSS added by import + listen | "
                         f"{_ms(startup['import_seconds'])} / {_mb(startup['rss_added'])} | "
                         + _startup_contrast(results, python) + " | RSS < 2 MB, no pydevd | "
                         + ("yes" if startup["rss_added"] < 2e6 and not startup["pydevd_imported"] else "NO") + " |")
    return "\n".join(lines)


def targets_summary(results: dict) -> str:
    """The overhead targets in one line each: fastattach's median ratios over the workloads."""
    ratios, costs = results["ratios"], results["per_evaluation_ns"]
    lines = ["| Python | figure | fastattach (workload medians: lowest–highest) | debugpy | target |",
             "|---|---|---|---|---|"]

    def spread(python, scenario, mode, table=ratios, unit="x", scale=1.0):
        values = [e["median"] * scale for w in results["workloads"]
                  if (e := table.get(f"{python}|{w}|{scenario}|{mode}")) and "median" in e]
        return f"{min(values):.2f}{unit}–{max(values):.2f}{unit}" if values else "–"

    for python in results["pythons"]:
        for scenario, limit in RATIO_TARGETS.items():
            lines.append(f"| {python} | {scenario_label(scenario)} | {spread(python, scenario, 'fastattach')} "
                         f"| {spread(python, scenario, 'debugpy')} | <= {limit}x |")
        lines.append(f"| {python} | false condition, cost per evaluation "
                     f"| {spread(python, 5, 'fastattach', costs, ' µs', 1e-3)} "
                     f"| {spread(python, 5, 'debugpy', costs, ' µs', 1e-3)} "
                     f"| >= {PER_EVALUATION_SPEEDUP_TARGET:.0f}x cheaper than debugpy |")
        startup = results.get("startup", {}).get(python, {}).get("fastattach")
        if startup:
            lines.append(f"| {python} | before any client: import time / RSS added by import + listen "
                         f"| {_ms(startup['import_seconds'])} / {_mb(startup['rss_added'])} "
                         f"| {_startup_contrast(results, python)} | RSS < 2 MB, no pydevd |")
    return "\n".join(lines)


def _startup_contrast(results: dict, python: str) -> str:
    debugpy = results.get("startup", {}).get(python, {}).get("debugpy")
    if not debugpy:
        return "–"
    return f"{_ms(debugpy['import_seconds'])} / {_mb(debugpy['rss_added'])}"


def figures_table(results: dict) -> str:
    """Hit latency, attach latency, RSS, start-up and soak, per Python and mode."""
    lines = ["| Python | mode | hit latency (median of 20) | attach latency | RSS before listen | after listen | "
             "attached | debugpy adapter process | import | listen | soak RSS start → end (slope) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for python in results["pythons"]:
        for mode in ("none",) + tuple(m for m in DEBUGGERS if m in results["modes"]):
            latency = results.get("latency", {}).get(python, {}).get(mode)
            attach = results.get("attach", {}).get(python, {}).get(mode)
            rss = results.get("rss", {}).get(python, {}).get(mode, {})
            startup = results.get("startup", {}).get(python, {}).get(mode, {})
            soak = results.get("soak", {}).get(python, {}).get("summary", {}).get(mode)
            soak_cell = "–" if not soak else (f"{_mb(soak['start'])} → {_mb(soak['end'])} "
                                              f"({soak['slope_mb_per_min']:+.2f} MB/min)")
            lines.append(
                f"| {python} | {mode} | {_ms(latency and latency['median'])} | {_ms(attach and attach['median'])} "
                f"| {_mb(rss.get('before_listen'))} | {_mb(rss.get('after_listen'))} | {_mb(rss.get('attached'))} "
                f"| {_mb(rss.get('adapter'))} | {_ms(startup.get('import_seconds'))} "
                f"| {_ms(startup.get('listen_seconds'))} | {soak_cell} |")
    return "\n".join(lines)


def noise_floor_spreads(results: dict) -> dict[tuple, list[float]]:
    """(python, workload) -> per repetition, slowest / fastest of its no-debugger runs."""
    groups: dict[tuple, list[float]] = {}
    for run in results.get("runs", []):
        if run.get("ok") and run["mode"] == "none" and run.get("seconds"):
            groups.setdefault((run["python"], run["workload"], run["rep"]), []).append(run["seconds"])
    spreads: dict[tuple, list[float]] = {}
    for (python, workload, _), times in groups.items():
        if len(times) > 1:
            spreads.setdefault((python, workload), []).append(max(times) / min(times))
    return spreads


def noise_floor_line(results: dict) -> str:
    medians = [statistics.median(v) for v in noise_floor_spreads(results).values()]
    if not medians:
        return ""
    return (f"Noise floor of this machine: the no-debugger runs of one repetition differ by "
            f"{min(medians):.2f}x–{max(medians):.2f}x (median per workload); read ratios near 1 against it.")


def noise_floor_table(results: dict) -> str:
    """How far apart the no-debugger runs of one repetition are: the spread that no
    debugger caused, against which ratios near 1 must be read."""
    spreads = noise_floor_spreads(results)
    if not spreads:
        return "Not measured (fewer than two no-debugger runs per repetition)."
    lines = ["| Python | workload | slowest / fastest no-debugger run of a repetition (median over repetitions, "
             "and the worst) |", "|---|---|---|"]
    for (python, workload), values in spreads.items():
        lines.append(f"| {python} | {workload} | {statistics.median(values):.2f}x (worst {max(values):.2f}x) |")
    return "\n".join(lines)


FILTER_COUNTERS = ("start_disable", "start_forward", "line_disable", "line_forward", "jump_disable",
                   "condition_false", "condition_forward", "slow_forward", "probe")


def filter_counters_table(results: dict) -> str:
    """Where fastattach's time goes: its C filter's counters, median over the runs of a row.

    A *_disable event costs one C call once per code location; *_forward and
    slow_forward events reach pydevd's Python callbacks; condition_false is a
    condition evaluated in C without calling pydevd; probe is a logpoint hit served.
    """
    rows: dict[tuple, list[dict]] = {}
    for run in results.get("runs", []):
        if run.get("ok") and run["mode"] == "fastattach" and run.get("filter_stats"):
            rows.setdefault((run["python"], run["workload"], run["scenario"]), []).append(run["filter_stats"])
    if not rows:
        return "No fastattach run with a client recorded filter counters."
    lines = ["| Python | workload | scenario | " + " | ".join(FILTER_COUNTERS) + " |",
             "|---|---|---|" + "---|" * len(FILTER_COUNTERS)]
    for (python, workload, scenario), stats in rows.items():
        cells = [f"{statistics.median(s.get(name, 0) for s in stats):.0f}" for name in FILTER_COUNTERS]
        lines.append(f"| {python} | {workload} | {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failures_list(results: dict) -> str:
    failures = results.get("failures", [])
    if not failures:
        return "None: every scenario's set-up was verified."
    return "\n".join(f"- {f['where']}: {f['error']}" for f in failures)


def write_chart(results: dict, path: str) -> None:
    """Bar charts of the median ratios (log scale, min–max whiskers) and the soak curves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = results["ratios"]
    modes = [m for m in DEBUGGERS if m in results["modes"]] + [m for m in REFERENCES if m in results["references"]]
    pythons, workloads = results["pythons"], results["workloads"]
    soak_rows = 1 if results.get("soak") else 0
    rows = len(workloads) + soak_rows
    fig, axes = plt.subplots(rows, len(pythons), figsize=(7 * len(pythons), 3.2 * rows), squeeze=False)
    colors = {"debugpy": "tab:red", "fastattach": "tab:green", "bdb": "tab:gray", "coverage": "tab:blue"}
    for col, python in enumerate(pythons):
        for row, workload in enumerate(workloads):
            ax = axes[row][col]
            groups = list(results["scenarios"]) + ([REFERENCE_SCENARIO] if results["references"] else [])
            width = 0.8 / max(1, len(modes))
            for i, mode in enumerate(modes):
                xs, ys, lows, highs = [], [], [], []
                for x, scenario in enumerate(groups):
                    entry = ratios.get(f"{python}|{workload}|{scenario}|{mode}")
                    if entry and "median" in entry:
                        xs.append(x + (i - (len(modes) - 1) / 2) * width)
                        ys.append(entry["median"])
                        lows.append(entry["median"] - entry["min"])
                        highs.append(entry["max"] - entry["median"])
                if xs:
                    ax.bar(xs, ys, width, yerr=[lows, highs], label=mode, color=colors.get(mode), capsize=2)
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_xticks(range(len(groups)), [str(g) for g in groups])
            ax.set_title(f"{workload} — Python {python}", fontsize=9)
            ax.set_ylabel("time / no debugger")
            if row == 0 and col == 0 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        if soak_rows:
            ax = axes[len(workloads)][col]
            soak = results["soak"].get(python)
            if soak:
                for mode, curve in soak["curves"].items():
                    ax.plot([t / 60 for t in curve["t"]], [r / 1e6 for r in curve["rss"]], label=mode,
                            color=colors.get(mode, "black"))
                ax.set_title(f"RSS soak ({soak['workload']}, attached) — Python {python}", fontsize=9)
                ax.set_xlabel("minutes")
                ax.set_ylabel("RSS (MB)")
                ax.legend(fontsize=7)
    fig.suptitle("Scenario numbers on the x axis (see the table); ref = outside references", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))   # leave the top strip to the suptitle
    fig.savefig(path, dpi=90)
    plt.close(fig)


def machine_info(python_versions: dict[str, str]) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "pythons": python_versions}


def interpreter_versions(python: str) -> dict:
    out = subprocess.run(
        [python, "-c", "import sys, importlib.metadata as m; print(sys.version.split()[0]); "
                       "print(m.version('debugpy'))"],
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return {"python": out[0], "debugpy": out[1]}


def _revision(results: dict) -> str:
    revision = results.get("revision") or {}
    if revision.get("start") == revision.get("end"):
        return str(revision.get("start"))
    return f"{revision.get('start')} at the start, {revision.get('end')} at the end (the tree changed during the run)"


def markdown_report(results: dict) -> str:
    machine = results["machine"]
    pythons = ", ".join(f"{v['python']} ({p}, debugpy {v['debugpy']})" for p, v in machine["pythons"].items())
    return "\n".join([
        "# fastattach benchmark results",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}; Pythons: {pythons}; "
        f"date: {results['date']}. Total time: {results['elapsed_seconds'] / 60:.1f} min. "
        f"fastattach revision: {_revision(results)}.",
        "",
        f"Clock: {CLOCK_LABELS[results.get('clock', 'wall')]}. "
        "Each ratio is a run's fastest sample divided by the no-debugger run's next to it "
        f"(same Python, workload and repetition); the cell shows the median over {results['repeat']} "
        "interleaved repetitions and, in parentheses, their min–max. Every number comes from a fresh "
        "process with a real DAP client attached as the scenario says.",
        "",
        "## Headline (geometric mean over workloads of the median ratio)",
        "",
        headline_table(results),
        "",
        "## Noise floor",
        "",
        "The same program with no debugger, run several times within one repetition (once per scenario "
        "group), on this shared machine:",
        "",
        noise_floor_table(results),
        "",
        "## Overhead targets",
        "",
        targets_table(results),
        "",
        "## Latency, memory and start-up",
        "",
        figures_table(results),
        "",
        "## Every row",
        "",
        ratio_table(results),
        "",
        "## Where fastattach's time goes: its C filter's counters per run",
        "",
        filter_counters_table.__doc__.split("\n\n", 1)[1].strip().replace("\n    ", " "),
        "",
        filter_counters_table(results),
        "",
        "## Breakpoint lines chosen automatically",
        "",
        plans_table(results),
        "",
        "## Failed set-ups",
        "",
        failures_list(results),
        "",
    ])


def plans_table(results: dict) -> str:
    lines = ["| Python | workload | hottest function | hottest line (hits/unit) | never-run line (function) "
             "| logpoint line (hits/unit) | units per sample |", "|---|---|---|---|---|---|---|"]
    for python, per_workload in results["profiles"].items():
        for workload, profile in per_workload.items():
            plan = profile["plan"]
            never = ("none: every line ran" if plan["never_line"] is None else
                     f"{os.path.basename(plan['never_file'])}:{plan['never_line']} ({plan['never_function']})")
            lines.append(
                f"| {python} | {workload} | {os.path.basename(plan['hot_file'])}: {plan['hot_function']} "
                f"| {plan['hottest_line']} ({plan['hottest_line_hits']}) | {never} "
                f"| {os.path.basename(plan['logpoint_file'])}:{plan['logpoint_line']} ({plan['logpoint_hits']}) "
                f"| {profile['inner']} |")
    return "\n".join(lines)


def results_md(results: dict, fragments_dir: str, chart: str | None = None) -> str:
    """RESULTS.md: this run's report, then every benchmarks/results/*.md fragment verbatim."""
    parts = [markdown_report(results)]
    if chart:
        parts.append(f"![median ratios per scenario, and the RSS soak]({chart})\n")
    fragments = sorted(glob.glob(os.path.join(fragments_dir, "*.md")))
    if fragments:
        parts.append("## Other results (benchmarks/results/*.md, verbatim)\n")
        for fragment in fragments:
            with open(fragment) as source:
                parts.append(source.read().rstrip("\n") + "\n")
    return "\n".join(p for p in parts if p)

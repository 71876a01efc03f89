"""The benchmark command end to end, with real debuggers and real DAP clients.

Nothing here asserts a timing: only that every row is produced, and that a
scenario whose set-up did not take effect fails the run instead of reporting a
speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastattach.bench import cli, harness
from fastattach.bench.scenarios import (
    DEBUGGERS,
    LOGPOINT_MESSAGE,
    NEVER_RUN_LINES,
    REFERENCES,
    SCENARIOS,
    ScenarioSetup,
    write_support_files,
)


def run_bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastattach.bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_quick_run_prints_and_records_every_row(tmp_path):
    out = tmp_path / "out"
    done = run_bench("--quick", "--python", sys.executable, "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    python = results["pythons"][0]
    assert results["failures"] == []
    for scenario, label in SCENARIOS.items():
        assert f"| {python} | richards | {scenario}. {label} |" in done.stdout
        for mode in DEBUGGERS:
            assert "median" in results["ratios"][f"{python}|richards|{scenario}|{mode}"]
    for mode in REFERENCES:
        assert "median" in results["ratios"][f"{python}|richards|ref|{mode}"]
    for mode in DEBUGGERS:
        assert len(results["latency"][python][mode]["all"]) == 20
        assert results["attach"][python][mode]["n"] >= 1
        assert results["rss"][python][mode]["attached"] > 0
        assert results["startup"][python][mode]["n"] >= 1
        assert results["soak"][python]["curves"][mode]["rss"]
    assert results["startup"][python]["fastattach"]["pydevd_imported"] is False
    assert (out / "chart.png").stat().st_size > 0
    report = (out / "results.md").read_text()
    for heading in ("Headline", "Overhead targets", "Latency, memory and start-up", "Every row",
                    "Breakpoint lines chosen automatically"):
        assert heading in report


def test_a_users_own_script_is_a_workload(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(textwrap.dedent("""\
        def handle(request):
            total = 0
            for part in request:
                total += part
                if total < 0:
                    raise ValueError(total)
            return total


        if __name__ == "__main__":
            for _ in range(2000):
                handle(range(50))
        """))
    out = tmp_path / "out"
    done = run_bench("--quick", "--python", sys.executable, "--workload", str(script), "--sections", "ratios",
                     "--scenarios", "4,5", "--references", "bdb", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    python = results["pythons"][0]
    plan = results["profiles"][python][str(script)]["plan"]
    assert (plan["hot_function"], plan["never_function"]) == ("handle", "handle")
    assert plan["never_line"] == 6
    for scenario in (4, 5):
        for mode in DEBUGGERS:
            assert "median" in results["ratios"][f"{python}|{script}|{scenario}|{mode}"]


@pytest.fixture(scope="module")
def deltablue_profile():
    return harness.profile_workload(sys.executable, "deltablue", harness.Settings(quick=True))


@pytest.mark.parametrize("mode", DEBUGGERS)
class TestSetupThatDidNotTakeEffectFails:
    def settings(self):
        settings = harness.Settings(quick=True)
        settings.stop_timeout = 3.0
        return settings

    def test_an_unverified_breakpoint(self, mode, deltablue_profile):
        setup = ScenarioSetup(breakpoints={"/no/such/file.py": [{"line": 3}]})
        with pytest.raises(harness.SetupNotEffective, match="did not verify"):
            harness.run_scenario(sys.executable, "deltablue", deltablue_profile, 4, mode, setup, self.settings(),
                                 deltablue_profile["plan"])

    def test_a_logpoint_that_logs_nothing(self, mode, deltablue_profile, tmp_path):
        files = write_support_files(str(tmp_path))
        setup = ScenarioSetup(breakpoints={files.never_run: [{"line": NEVER_RUN_LINES[0],
                                                              "logMessage": LOGPOINT_MESSAGE}]},
                              expect_logpoint_output=True)
        with pytest.raises(harness.SetupNotEffective, match="logpoint produced no output"):
            harness.run_scenario(sys.executable, "deltablue", deltablue_profile, 6, mode, setup, self.settings(),
                                 deltablue_profile["plan"])

    def test_a_breakpoint_that_cannot_stop(self, mode, deltablue_profile, tmp_path):
        files = write_support_files(str(tmp_path))
        setup = ScenarioSetup(probe=(files.never_run, NEVER_RUN_LINES[0]))
        with pytest.raises(harness.SetupNotEffective, match="did not stop"):
            harness.run_scenario(sys.executable, "deltablue", deltablue_profile, 2, mode, setup, self.settings(),
                                 deltablue_profile["plan"])


def test_a_failed_setup_fails_the_command_and_reports_no_ratio(tmp_path, monkeypatch, capsys):
    def not_verified(*args, **kwargs):
        raise harness.SetupNotEffective("the server did not verify the breakpoint at x.py:1")

    monkeypatch.setattr(harness, "run_scenario", not_verified)
    out = tmp_path / "out"
    status = cli.main(["--workload", "deltablue", "--python", sys.executable, "--sections", "ratios",
                       "--scenarios", "4", "--references", "", "--repeat", "1", "--out", str(out)])
    assert status == 1
    results = json.loads((out / "results.json").read_text())
    python = results["pythons"][0]
    assert results["ratios"][f"{python}|deltablue|4|fastattach"] == {
        "failed": "SetupNotEffective: the server did not verify the breakpoint at x.py:1"}
    assert "FAILED" in (out / "results.md").read_text()
    assert not os.path.exists(out / "RESULTS.md")
    assert "FAILED" in capsys.readouterr().err

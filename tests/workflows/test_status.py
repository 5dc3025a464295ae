"""`posttrain status` (workflows/status.py) as a user calls it: the text, `--json`, the exit codes,
and its line in `posttrain commands`. What it reports per state: tests/workflows/state/test_observe.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.conftest import ROOT
from tests.workflows.state.test_observe import _done, _record, _summary, _write
from workflows.status import main


def test_a_finished_run_exits_0_and_shows_each_stage_with_fingerprint_and_output(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _write(run_dir, _record(run_dir, 1, time.time() - 100))
    for name in ("checkpoint", "sft", "dpo", "eval"):
        _done(run_dir, name)
    _summary(run_dir, {n: ("completed", "") for n in ("checkpoint", "sft", "dpo", "eval")}, finished_at=time.time())
    assert main([str(run_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"Pipeline 'sft_dpo' in {run_dir}: finished (started ")
    assert lines[1].split()[:3] == ["checkpoint", "[checkpoint]", "completed"]
    assert lines[2].split() == ["fingerprint", "checkpoint-fp"[:12], "output", str(run_dir / "checkpoint" / "model")]
    assert main([str(run_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "finished" and [s["status"] for s in data["stages"]] == ["completed"] * 4


def test_a_failed_stage_exits_1_and_a_folder_that_is_no_run_dir_2(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _write(run_dir, _record(run_dir, 1, time.time() - 100))
    _done(run_dir, "checkpoint")
    _summary(run_dir, {"checkpoint": ("completed", ""), "sft": ("failed", "exit code 1"), "dpo": ("skipped", "x"),
                       "eval": ("skipped", "x")}, finished_at=time.time())
    assert main([str(run_dir)]) == 1
    assert "sft         [sft]         failed" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no plan.json or summary.json" in capsys.readouterr().err


def test_the_command_is_listed_and_runs_as_a_module():
    listed = subprocess.run([sys.executable, "-m", "workflows.cli", "commands"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert "posttrain status" in listed.stdout and "posttrain report" in listed.stdout
    usage = subprocess.run([sys.executable, "-m", "workflows.status", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 0 and "--json" in usage.stdout

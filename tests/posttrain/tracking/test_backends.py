"""Fast paths never touch MLflow: a dry run, `tracking=none` (posttrain/tracking/none.py) and a stage
whose orchestrator could not make its run neither import mlflow nor create the store."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_dry_run_never_imports_mlflow_nor_creates_the_store(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "workflows.run", "+pipeline=sft_dpo_kto", "dry_run=true",
         f"run_dir={tmp_path}/run", f"tracking.uri=sqlite:///{db}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m == "mlflow" or m.startswith("mlflow.")}
    assert not db.exists() and not db.parent.exists()


def test_tracking_none_never_imports_mlflow(tmp_path):
    code = (
        "import sys\n"
        "from workflows.config import compose\nfrom workflows.planning import build_plan\n"
        "from workflows.tracking import tracked\nfrom posttrain.tracking import backend\n"
        "from posttrain.tracking.none import NullTracker\n"
        f"plan = build_plan(compose(['+pipeline=sft_dpo', 'run_dir={tmp_path}/run', 'tracking=none']))\n"
        "with tracked(plan) as tracker:\n"
        "    assert isinstance(tracker, NullTracker)\n"
        "    assert tracker.stage_env(plan.stages[0]) == {}\n"
        "spec = plan.stages[1].spec\n"
        "assert backend(spec.tracking.backend).report_to(spec) == 'none'\n"
        "import os; os.environ['POSTTRAIN_TRACKING'] = 'off'  # the orchestrator could not make the run\n"
        f"tracked_plan = build_plan(compose(['+pipeline=sft_dpo', 'run_dir={tmp_path}/run']))\n"
        "spec = tracked_plan.stages[1].spec\n"
        "assert spec.tracking.backend == 'mlflow', spec.tracking\n"
        "assert backend(spec.tracking.backend).report_to(spec) == 'none'\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'mlflow imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

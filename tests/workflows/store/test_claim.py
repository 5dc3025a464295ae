"""One writer per store entry (workflows/store/claim.py): runs racing for the same missing stage
train it once. Here the "training" is simulated; tests/integration/test_sweeps.py races two real
invocations."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from posttrain.artifacts import Manifest
from tests.workflows.state.test_decide import plan_for
from workflows.state.decide import prepare_stage_dir
from workflows.store.claim import claim
from workflows.store.views import attach


def _race(run_dir: str, data: str, planned, start, results) -> None:
    plan = plan_for(Path(run_dir), Path(data))
    attach(plan)
    stage = plan.stage("checkpoint")
    assert stage.reason == "new"
    planned.set()
    start.wait(60)
    with claim(plan, stage) as must_run:
        if must_run:  # what the stage process does, slowly enough for the other run to arrive meanwhile
            prepare_stage_dir(stage)
            time.sleep(1.5)
            model = Path(stage.spec.model_dir)
            model.mkdir(parents=True)
            (model / "model.safetensors").write_bytes(f"trained for {run_dir}".encode())
            stage.dir.write_manifest(Manifest(name=stage.name, type=stage.type, fingerprint=stage.spec.fingerprint,
                                              model_dir=stage.spec.model_dir, files=["model.safetensors"]))
    results.put((run_dir, must_run, stage.reason))


def test_two_runs_racing_for_one_missing_stage_train_it_once(tmp_path, data):
    ctx = multiprocessing.get_context("spawn")
    start, results, planned = ctx.Event(), ctx.Queue(), [ctx.Event(), ctx.Event()]
    runs = [ctx.Process(target=_race, args=(str(tmp_path / name), str(data), ready, start, results))
            for name, ready in zip("ab", planned)]
    for run in runs:
        run.start()
    assert all(ready.wait(60) for ready in planned)  # both planned the stage as `new` before either starts
    start.set()
    outcome = sorted(results.get(timeout=60) for _ in runs)
    for run in runs:
        run.join(30)
        assert run.exitcode == 0
    assert sorted(must_run for _, must_run, _ in outcome) == [False, True]  # one trained, one reused
    assert [reason for _, must_run, reason in outcome if not must_run] == ["cached"]
    trained_for = next(run_dir for run_dir, must_run, _ in outcome if must_run)
    for name in "ab":  # both run_dirs see the one model
        weights = tmp_path / name / "checkpoint" / "model" / "model.safetensors"
        assert weights.read_bytes() == f"trained for {trained_for}".encode()

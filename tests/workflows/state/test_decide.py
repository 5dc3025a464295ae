"""The reason each stage runs or is cached, resume decisions, and readying a stage's folder
(workflows/state/decide.py): pure and fast, nothing trains.

A finished stage is simulated the way a stage process leaves it: fingerprint.json from the
launcher's `prepare_stage_dir`, a model file, then manifest.json with the fingerprint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from posttrain.artifacts import Manifest
from posttrain.pipeline import Plan
from tests.conftest import run_cli
from tests.workflows.state.conftest import BRANCHES, branches_plan, data_overrides
from workflows.planning import PlanError
from workflows.state.decide import decide, prepare_stage_dir
from workflows.store.views import attach


def plan_for(run_dir: Path, data: Path, *overrides: str) -> Plan:
    """What the CLI does once it holds the run_dir: plan, then decide from the disk."""
    return decide(branches_plan(run_dir, data, *overrides))


def finish(plan: Plan, *names: str) -> None:
    """Leave `names` (default: all) as a completed stage process leaves them, in DAG order, with
    the run_dir linking to them as the CLI leaves it (workflows/store/views.py `attach`)."""
    attach(plan)
    for stage in plan.stages:
        if names and stage.name not in names:
            continue
        prepare_stage_dir(stage)
        model = Path(stage.spec.model_dir)
        model.mkdir(parents=True, exist_ok=True)
        (model / "model.safetensors").write_bytes(b"weights of " + stage.name.encode())
        stage.dir.write_manifest(Manifest(name=stage.name, type=stage.type, fingerprint=stage.spec.fingerprint,
                                          model_dir=stage.spec.model_dir, files=["model.safetensors"],
                                          metrics={"train_loss": 1.0}, finished_at=time.time()))
        time.sleep(0.01)  # finished_at strictly increases along the DAG


def reasons(plan: Plan) -> dict[str, str]:
    return {s.name: s.reason for s in plan.stages}


def add_checkpoint(stage_dir: str, step: int, complete: bool = True) -> Path:
    folder = Path(stage_dir) / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_new_then_cached(tmp_path, data):
    run_dir = tmp_path / "r"
    plan = plan_for(run_dir, data)
    assert reasons(plan) == {"checkpoint": "new", "sft": "new", "dpo": "new", "kto": "new"}
    finish(plan)
    assert set(reasons(plan_for(run_dir, data)).values()) == {"cached"}


def test_reasons_name_what_changed(tmp_path, data):
    run_dir = tmp_path / "r"
    finish(plan_for(run_dir, data))
    assert reasons(plan_for(run_dir, data, "stages.dpo.trainer.beta=0.3")) == {
        "checkpoint": "cached", "sft": "cached", "dpo": "config changed: stages.dpo.trainer.beta", "kto": "cached"}
    (data / "sft.jsonl").write_text("".join((data / "sft.jsonl").read_text().splitlines(keepends=True)[1:]))
    assert reasons(plan_for(run_dir, data)) == {
        "checkpoint": "cached", "sft": "data changed: sft.jsonl",
        "dpo": "upstream changed: sft", "kto": "upstream changed: sft"}


def test_a_change_to_one_branch_leaves_the_other_cached(tmp_path, data):
    run_dir = tmp_path / "r"
    finish(plan_for(run_dir, data))
    (data / "prefs.jsonl").write_text("".join((data / "prefs.jsonl").read_text().splitlines(keepends=True)[:30]))
    plan = plan_for(run_dir, data, "stages.dpo.trainer.learning_rate=1e-4")
    assert reasons(plan) == {"checkpoint": "cached", "sft": "cached", "kto": "cached",
                             "dpo": "config changed: stages.dpo.trainer.learning_rate; data changed: prefs.jsonl"}


def test_force_reruns_the_stage_and_everything_after_it(tmp_path, data):
    run_dir = tmp_path / "r"
    finish(plan_for(run_dir, data))
    assert reasons(plan_for(run_dir, data, "force=[sft]")) == {
        "checkpoint": "cached", "sft": "forced", "dpo": "upstream re-runs: sft", "kto": "upstream re-runs: sft"}
    assert reasons(plan_for(run_dir, data, "force=[dpo]"))["kto"] == "cached"
    assert set(reasons(plan_for(run_dir, data, "force=[all]")).values()) == {"forced"}


def test_force_names_are_checked(tmp_path, data):
    with pytest.raises(PlanError) as err:
        plan_for(tmp_path / "r", data, "force=[dpoo,kto]")
    assert err.value.problems == [
        "force: 'dpoo' is not a stage of this plan (stages: checkpoint, sft, dpo, kto, or all); did you mean 'dpo'?"]


def test_cli_force_all_and_unknown_force(tmp_path):
    proc = run_cli(*BRANCHES, f"run_dir={tmp_path}", "dry_run=true", "force=all")
    assert proc.returncode == 0 and proc.stdout.count("] forced --") == 4, proc.stdout + proc.stderr
    proc = run_cli(*BRANCHES, f"run_dir={tmp_path}", "dry_run=true", "force=dppo")
    assert proc.returncode == 2 and "force: 'dppo' is not a stage" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_half_written_stage_is_never_used(tmp_path, data):
    run_dir = tmp_path / "r"
    plan = plan_for(run_dir, data)
    finish(plan, "checkpoint", "sft")
    dpo = plan.stage("dpo")
    prepare_stage_dir(dpo)  # the process started, wrote part of its model, and died: no manifest
    (Path(dpo.spec.model_dir)).mkdir(parents=True)
    (Path(dpo.spec.model_dir) / "model.safetensors").write_bytes(b"half")
    assert reasons(plan_for(run_dir, data))["dpo"] == "incomplete: no manifest"
    finish(plan)
    (Path(plan.stage("kto").spec.model_dir) / "model.safetensors").unlink()  # a manifest, files gone
    assert reasons(plan_for(run_dir, data))["kto"] == "incomplete: model files missing"


def test_an_upstream_that_ran_again_makes_downstream_stale(tmp_path, data):
    run_dir = tmp_path / "r"
    finish(plan_for(run_dir, data))
    finish(plan_for(run_dir, data, "force=[sft]"), "sft")  # forced sft finished; dpo/kto never re-ran
    assert reasons(plan_for(run_dir, data)) == {
        "checkpoint": "cached", "sft": "cached", "dpo": "upstream re-ran: sft", "kto": "upstream re-ran: sft"}


def test_resume_from_the_newest_complete_checkpoint_of_the_same_fingerprint(tmp_path, data):
    run_dir = tmp_path / "r"
    plan = plan_for(run_dir, data)
    finish(plan, "checkpoint")
    sft = plan.stage("sft")
    prepare_stage_dir(sft)
    add_checkpoint(sft.stage_dir, 100)
    add_checkpoint(sft.stage_dir, 120)
    partial = add_checkpoint(sft.stage_dir, 140, complete=False)  # killed while saving
    again = plan_for(run_dir, data)
    assert reasons(again)["sft"] == "resume from checkpoint-120"
    assert again.stage("sft").spec.resume_from == "checkpoint-120"
    prepare_stage_dir(again.stage("sft"))
    assert not partial.exists()
    assert [step for step, _ in sft.dir.complete_checkpoints()] == [100, 120]


def test_checkpoints_trained_on_an_earlier_upstream_output_are_not_resumed(tmp_path, data):
    run_dir = tmp_path / "r"
    plan = plan_for(run_dir, data)
    finish(plan, "checkpoint", "sft")
    prepare_stage_dir(plan.stage("dpo"))
    add_checkpoint(plan.stage("dpo").stage_dir, 4)  # DPO was killed after checkpoint-4
    assert reasons(plan_for(run_dir, data))["dpo"] == "resume from checkpoint-4"
    time.sleep(0.01)
    finish(plan_for(run_dir, data, "force=[sft]"), "sft")  # then SFT ran again (forced), DPO did not
    dpo = plan_for(run_dir, data).stage("dpo")
    assert dpo.reason == "upstream re-ran: sft" and dpo.spec.resume_from is None


def test_checkpoints_resume_when_the_whole_chain_was_prepared_before_its_upstreams_ran(tmp_path, data):
    """On Slurm every stage is prepared when the chain is submitted, before any upstream job runs."""
    run_dir = tmp_path / "r"
    plan = plan_for(run_dir, data)
    for stage in plan.stages:  # sbatch of every job
        prepare_stage_dir(stage)
    time.sleep(0.01)
    finish(plan, "checkpoint", "sft")  # their jobs ran
    time.sleep(0.01)
    add_checkpoint(plan.stage("dpo").stage_dir, 4)  # then DPO's job, which died after checkpoint-4
    assert reasons(plan_for(run_dir, data))["dpo"] == "resume from checkpoint-4"


def test_checkpoints_of_another_config_are_never_resumed(tmp_path, data):
    run_dir = tmp_path / "r"
    plan = plan_for(run_dir, data)
    finish(plan, "checkpoint")
    prepare_stage_dir(plan.stage("sft"))
    add_checkpoint(plan.stage("sft").stage_dir, 120)
    changed = plan_for(run_dir, data, "stages.sft.trainer.learning_rate=1e-4")
    sft = changed.stage("sft")
    assert sft.reason == "config changed: stages.sft.trainer.learning_rate" and sft.spec.resume_from is None
    prepare_stage_dir(sft)
    assert not (Path(sft.stage_dir) / "checkpoints").exists()
    assert json.loads((Path(sft.stage_dir) / "fingerprint.json").read_text())["fingerprint"] == sft.spec.fingerprint


def test_dry_run_prints_reasons(tmp_path, data):
    run_dir = tmp_path / "r"
    finish(plan_for(run_dir, data))
    proc = run_cli(*BRANCHES, f"run_dir={run_dir}", "tracking=none", "dry_run=true", *data_overrides(data),
                   "stages.dpo.trainer.beta=0.5")
    assert proc.returncode == 0, proc.stderr
    assert "[sft] cached --" in proc.stdout and "[dpo] config changed: stages.dpo.trainer.beta --" in proc.stdout
    assert "stages.sft " not in proc.stdout  # a cached stage shows no command: it starts nothing

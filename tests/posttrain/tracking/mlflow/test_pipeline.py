"""MLflow tracking of a pipeline (posttrain/tracking/mlflow/pipeline.py) without training: the run
lifecycle (nesting, lineage, resume, cache, true statuses) driven through the tracker against a real
SQLite store, with each stage process replaced by the files it leaves; The end-to-end runs are in
tests/integration/test_tracking_pipeline.py and test_tracking_server.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.artifacts import STAGE_LOG, STAGE_YAML, Manifest
from posttrain.pipeline import Plan, PlannedStage, StageResult
from posttrain.status import Status
from posttrain.tracking.mlflow.pipeline import RUN_FILE
from posttrain.tracking.redact import REDACTED
from workflows.config import compose
from workflows.planning import build_plan
from workflows.state.decide import decide
from workflows.tracking import tracked

# ---------------------------------------------------------------------------------------------
# The run lifecycle against a real SQLite store, with stages simulated (no training)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the lifecycle tests (creating its tables takes seconds); one experiment each."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"
    client = MlflowClient(uri)
    client.search_experiments()  # creates the tables once
    return uri, client


def _plan(tmp_path: Path, store, experiment: str) -> Plan:
    """The plan as the CLI runs it: built, then fingerprinted and decided against the run_dir."""
    return decide(build_plan(compose(["+pipeline=sft_dpo", f"run_dir={tmp_path}/run", f"store_dir={tmp_path}/store",
                                      f"tracking.uri={store[0]}",
                                      f"tracking.experiment={experiment}"])))


def _fake_run(tracker, stage: PlannedStage, status: Status = Status.COMPLETED,
              metrics: dict | None = None, **manifest_extra) -> tuple[dict, StageResult]:
    """What the launcher does around a stage process, with the process replaced by a few files."""
    env = tracker.stage_env(stage)
    folder = stage.dir
    folder.path.mkdir(parents=True, exist_ok=True)
    (folder / STAGE_YAML).write_text(json.dumps({**stage.spec.to_dict(), "trainer": {"hub_token": "hf_x" * 10}}))
    (folder / STAGE_LOG).write_text(f"[{stage.name}] training\n")
    if status == Status.COMPLETED:
        folder.write_manifest(Manifest(stage.name, stage.type, stage.spec.fingerprint, stage.spec.model_dir,
                                       metrics=metrics or {}, extra=manifest_extra))
    result = StageResult.of(stage, status, wall_seconds=1.5, metrics=metrics or {})
    tracker.stage_end(stage, result)
    return env, result


def _runs(client, experiment: str) -> dict[str, list]:
    """Runs by name, oldest first; the pipeline's parent runs under `parents`."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    out: dict[str, list] = {}
    for run in client.search_runs([experiment_id], order_by=["attributes.start_time ASC"]):
        key = "parents" if run.data.tags.get("posttrain.role") == "pipeline" else run.info.run_name
        out.setdefault(key, []).append(run)
    return out


def test_lifecycle_nesting_lineage_and_statuses(tmp_path, store):
    plan = _plan(tmp_path, store, "lifecycle")
    checkpoint, sft, dpo = plan.stage("checkpoint"), plan.stage("sft"), plan.stage("dpo")
    with tracked(plan) as tracker:
        env, _ = _fake_run(tracker, checkpoint, metrics={"parameters": 100.0})
        _fake_run(tracker, sft, metrics={"train_loss": 2.5, "global_step": 6})
        _fake_run(tracker, dpo, status=Status.FAILED)
    client = store[1]
    runs = _runs(client, "lifecycle")
    [parent] = runs["parents"]
    assert parent.info.status == "FAILED"
    assert env["MLFLOW_RUN_ID"] == runs["checkpoint"][0].info.run_id
    for name in ("checkpoint", "sft", "dpo"):
        [run] = runs[name]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["posttrain.stage"] == name
    sft_run, dpo_run = runs["sft"][0], runs["dpo"][0]
    assert sft_run.info.status == "FINISHED" and dpo_run.info.status == "FAILED"
    assert dpo_run.data.tags["posttrain.upstream.sft.run_id"] == sft_run.info.run_id
    assert (dpo_run.data.tags["posttrain.input.policy"] == sft.spec.model_dir
            == sft_run.data.tags["posttrain.output_dir"])
    assert dpo_run.data.params["stage.trainer.beta"] == str(dpo.spec.trainer["beta"])
    assert parent.data.metrics["sft.train_loss"] == 2.5 and parent.data.metrics["checkpoint.parameters"] == 100.0
    assert parent.data.tags["posttrain.status.dpo"] == "failed"
    stage_yaml = Path(client.download_artifacts(sft_run.info.run_id, "stage.yaml", str(tmp_path)))
    assert "hf_x" not in stage_yaml.read_text() and REDACTED in stage_yaml.read_text()
    record = json.loads((dpo.dir / RUN_FILE).read_text())
    assert record["run_id"] == dpo_run.info.run_id and record["status"] == "FAILED"


def test_interrupt_kills_then_resume_continues_the_same_run(tmp_path, store):
    plan = _plan(tmp_path, store, "resume")
    with pytest.raises(KeyboardInterrupt), tracked(plan) as tracker:
        _fake_run(tracker, plan.stage("checkpoint"))
        tracker.stage_env(plan.stage("sft"))
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) while sft trains
    client = store[1]
    runs = _runs(client, "resume")
    [first_parent] = runs["parents"]
    [sft_run] = runs["sft"]
    assert first_parent.info.status == "KILLED" and sft_run.info.status == "KILLED"

    again = _plan(tmp_path, store, "resume")  # same config: same fingerprints; sft resumes its checkpoint
    assert again.stage("checkpoint").cached
    assert again.stage("sft").spec.fingerprint == plan.stage("sft").spec.fingerprint
    again.stage("sft").spec.resume_from = "checkpoint-3"
    with tracked(again) as tracker:
        tracker.stage_end(again.stage("checkpoint"), StageResult.of(again.stage("checkpoint"), Status.CACHED,
                                                                    metrics={"parameters": 100.0}))
        _fake_run(tracker, again.stage("sft"))
        _fake_run(tracker, again.stage("dpo"))
    runs = _runs(client, "resume")
    assert runs["parents"][0].info.run_id == first_parent.info.run_id
    second_parent = runs["parents"][1]
    assert len(runs["sft"]) == 1, "a resumed stage must continue its run, not start another"
    sft_run = runs["sft"][0]
    assert sft_run.info.status == "FINISHED" and second_parent.info.status == "FINISHED"
    assert sft_run.data.tags["mlflow.parentRunId"] == second_parent.info.run_id
    assert sft_run.data.tags["posttrain.previous_parent_run_id"] == first_parent.info.run_id
    # the cached checkpoint: a marker run under the new parent pointing at the run that built it
    original, marker = runs["checkpoint"]
    assert marker.data.tags["posttrain.cached"] == "true"
    assert marker.data.tags["posttrain.source_run_id"] == original.info.run_id
    assert marker.data.tags["mlflow.parentRunId"] == second_parent.info.run_id
    assert runs["sft"][0].data.tags["posttrain.upstream.checkpoint.run_id"] == original.info.run_id


def test_a_new_attempt_without_a_checkpoint_gets_a_new_run(tmp_path, store):
    plan = _plan(tmp_path, store, "attempts")
    with tracked(plan) as tracker:
        _fake_run(tracker, plan.stage("checkpoint"), status=Status.FAILED)
    again = _plan(tmp_path, store, "attempts")
    assert again.stage("checkpoint").spec.resume_from is None
    with tracked(again) as tracker:  # resume_from is unset: training starts over
        _fake_run(tracker, again.stage("checkpoint"))
    first, second = _runs(store[1], "attempts")["checkpoint"]
    assert (first.info.status, second.info.status) == ("FAILED", "FINISHED")
    assert second.data.tags["posttrain.previous_attempt_run_id"] == first.info.run_id


def test_data_counts_are_params_and_an_eval_puts_its_models_side_by_side(tmp_path, store):
    plan = _plan(tmp_path, store, "keys")
    counts = {"data/rows": 640.0, "data/eval_rows": 32.0, "data/invalid_rows": 0.0, "data/dropped_rows": 0.0,
              "data/over_length_rows": 3.0, "data/sources": 1.0}
    models = {"checkpoint": 0.0, "sft": 0.5, "dpo": 0.75}
    measured = {f"{m}/{k}": v for m, a in models.items() for k, v in (("accuracy", a), ("accuracy/copy", a / 2),
                                                                       ("ppl", 10 - a))}
    with tracked(plan) as tracker:
        _fake_run(tracker, plan.stage("checkpoint"))
        _fake_run(tracker, plan.stage("sft"), metrics={"train_loss": 2.5, **counts})
        _fake_run(tracker, plan.stage("dpo"), metrics={"train_loss": 0.6, **counts})
        _fake_run(tracker, plan.stage("eval"), metrics=measured,
                  models={m: str(tmp_path / m) for m in models})
    runs = _runs(store[1], "keys")
    sft = runs["sft"][0]
    assert {k: sft.data.params[k] for k in counts} == {k: str(v) for k, v in counts.items()}
    assert not set(counts) & set(sft.data.metrics)  # no one-point `data` charts above the curves
    assert sft.data.metrics["train_loss"] == 2.5
    parent = runs["parents"][0]
    assert parent.data.params["sft.data/rows"] == "640.0" and "sft.data/rows" not in parent.data.metrics
    assert parent.data.metrics["sft.train_loss"] == 2.5
    evaluation = runs["eval"][0]
    # a chart section per metric, one bar per model
    assert {k: v for k, v in evaluation.data.metrics.items() if k != "wall_seconds"} == {
        f"{k}/{m}": v for m, a in models.items() for k, v in (("accuracy", a), ("accuracy/copy", a / 2),
                                                              ("ppl", 10 - a))}
    for model, accuracy in models.items():  # and a child run per model: the compare view lines them up
        [child] = runs[f"eval/{model}"]
        assert child.data.tags["mlflow.parentRunId"] == evaluation.info.run_id
        assert child.data.tags["posttrain.model"] == model and child.info.status == "FINISHED"
        assert child.data.metrics == {"accuracy": accuracy, "accuracy/copy": accuracy / 2, "ppl": 10 - accuracy}


def test_a_sweep_variant_tags_every_run_and_its_followed_jobs_end_their_runs(tmp_path, store):
    """A sweep on a scheduler: each variant's stages are submitted (their runs stay open), then
    followed at the end of the sweep, which ends every run with its true status."""
    plan = _plan(tmp_path, store, "sweep")
    plan.tracking.tags.update({"posttrain.sweep": "20250101-120000", "posttrain.sweep.variant": "beta=0.2"})
    with tracked(plan) as tracker:
        for stage in plan.stages:
            tracker.stage_env(stage)
            tracker.stage_end(stage, StageResult.of(stage, Status.SUBMITTED))
        for stage in plan.stages:  # later: every job ended
            stage.dir.write_manifest(Manifest(stage.name, stage.type, stage.spec.fingerprint, stage.spec.model_dir))
            tracker.stage_end(stage, StageResult.of(stage, Status.COMPLETED, wall_seconds=1.0))
    runs = _runs(store[1], "sweep")
    [parent] = runs.pop("parents")
    assert parent.info.run_name.endswith(" [beta=0.2]") and parent.info.status == "FINISHED"
    for run in [parent, *(r for rs in runs.values() for r in rs)]:
        assert run.data.tags["posttrain.sweep"] == "20250101-120000"
        assert run.data.tags["posttrain.sweep.variant"] == "beta=0.2"
    assert {name: [r.info.status for r in rs] for name, rs in runs.items()} == {
        s.name: ["FINISHED"] for s in plan.stages}

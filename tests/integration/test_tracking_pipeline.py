"""The tiny sft_dpo_kto pipeline trains for real against the embedded SQLite store; what it logged is
read back with MlflowClient. KTO is made to fail at run time (a learning-rate schedule TRL rejects
only when the stage builds its config), so one invocation shows both a finished and a failed branch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, fast_overrides, read_summary, run_cli
from posttrain.tracking.redact import REDACTED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    base = tmp_path_factory.mktemp("tracked")
    run_dir, db = base / "run", base / "mlflow.db"
    proc = run_cli(
        "+pipeline=sft_dpo_kto", f"run_dir={run_dir}", f"tracking.uri=sqlite:///{db}", "tracking.register=dpo",
        *fast_overrides("sft_dpo_kto"),
        # a valid optimizer whose package (bitsandbytes) the stage lacks: kto fails at runtime, not at plan time
        "stages.kto.trainer.optim=adamw_bnb_8bit",
        "launcher.env.HF_TOKEN=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",  # must never reach MLflow
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # kto failed
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("sft_dpo_kto")
    runs = client.search_runs([experiment.experiment_id])
    return {"client": client, "runs": runs, "run_dir": run_dir, "base": base, "proc": proc,
            "parent": next(r for r in runs if r.data.tags.get("posttrain.role") == "pipeline"),
            "stage": {r.info.run_name: r for r in runs if r.data.tags.get("posttrain.role") == "stage"}}


def test_one_parent_and_one_nested_run_per_stage_that_ran(tracked_run):
    parent, stage = tracked_run["parent"], tracked_run["stage"]
    summary = read_summary(tracked_run["run_dir"])
    ran = [name for name, s in summary.items() if s["status"] in ("completed", "failed")]
    assert sorted(stage) == sorted(ran) and {"checkpoint", "sft", "dpo", "kto"} <= set(ran)
    assert len(tracked_run["runs"]) == 1 + len(ran), "a stray run: some process logged outside its stage run"
    assert parent.info.run_name.startswith("sft_dpo_kto-")
    for name, run in stage.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["posttrain.stage_type"] == summary[name]["type"]


def test_statuses_are_true(tracked_run):
    parent, stage = tracked_run["parent"], tracked_run["stage"]
    assert {n: stage[n].info.status for n in ("checkpoint", "sft", "dpo", "kto")} == {
        "checkpoint": "FINISHED", "sft": "FINISHED", "dpo": "FINISHED", "kto": "FAILED"}
    assert parent.info.status == "FAILED"
    summary = read_summary(tracked_run["run_dir"])
    assert {n: parent.data.tags.get(f"posttrain.status.{n}") for n in summary} == {
        n: s["status"] for n, s in summary.items()}  # kto failed; a stage that needs it (eval) skipped


def test_training_metrics_land_in_the_stage_run(tracked_run):
    client, stage = tracked_run["client"], tracked_run["stage"]
    trainer = yaml.safe_load((tracked_run["run_dir"] / "sft" / "stage.yaml").read_text())["trainer"]
    every, last = trainer["logging_steps"], trainer["max_steps"]
    losses = client.get_metric_history(stage["sft"].info.run_id, "loss")
    assert [m.step for m in losses] == list(range(every, last + 1, every))  # one point per logging step
    assert "eval_loss" in stage["sft"].data.metrics  # the final evaluate() after training, same run
    assert "rewards/accuracies" in stage["dpo"].data.metrics


def test_params_are_the_flattened_redacted_stage_config(tracked_run):
    stage, run_dir = tracked_run["stage"], tracked_run["run_dir"]
    dpo = stage["dpo"].data.params
    spec = yaml.safe_load((run_dir / "dpo" / "stage.yaml").read_text())
    assert dpo["stage.trainer.beta"] == str(spec["trainer"]["beta"])
    assert dpo["stage.data.sources.0.path"] == spec["data"]["sources"][0]["path"]
    assert dpo["stage.policy.path"] == os.path.realpath(run_dir / "sft" / "model")  # the store entry
    assert dpo["learning_rate"] == str(float(spec["trainer"]["learning_rate"]))  # TRL's args, via HF's callback
    parent = tracked_run["parent"].data.params
    assert parent["stages.dpo.trainer.beta"] == str(spec["trainer"]["beta"])
    assert parent["launcher.env.HF_TOKEN"] == REDACTED
    everything = json.dumps([r.data.params for r in tracked_run["runs"]] + [r.data.tags for r in tracked_run["runs"]])
    assert "hf_thisisnotarealtoken" not in everything


def test_lineage_tags_name_the_sft_run_its_output_and_the_data(tracked_run):
    stage, run_dir = tracked_run["stage"], tracked_run["run_dir"]
    sft, dpo, kto = stage["sft"], stage["dpo"], stage["kto"]
    sft_output = os.path.realpath(run_dir / "sft" / "model")  # its store entry
    assert sft.data.tags["posttrain.output_dir"] == sft_output
    assert sft.data.tags["posttrain.upstream.checkpoint.run_id"] == stage["checkpoint"].info.run_id
    for run in (dpo, kto):
        tags = run.data.tags
        assert tags["posttrain.upstream"] == "sft"
        assert tags["posttrain.upstream.sft.run_id"] == sft.info.run_id
        assert tags["posttrain.input.policy"] == tags["posttrain.input.reference"] == sft_output
        assert tags["posttrain.git_commit"] == tracked_run["parent"].data.tags["posttrain.git_commit"]
    spec = yaml.safe_load((run_dir / "dpo" / "stage.yaml").read_text())
    data_file = Path(spec["data"]["sources"][0]["path"])
    import hashlib

    assert dpo.data.tags["posttrain.data.sources.0.path"] == str(data_file)
    assert dpo.data.tags["posttrain.data.sources.0.digest"] == "sha256:" + hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert {d.dataset.name for d in dpo.inputs.dataset_inputs} >= {data_file.name}  # the UI's Dataset column


def test_artifacts_parent_and_stages(tracked_run):
    client, parent, stage = tracked_run["client"], tracked_run["parent"], tracked_run["stage"]
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "plan.txt", "dag.md", "dag.svg", "summary.json"} <= listed
    out = tracked_run["base"] / "downloads"
    config = yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, "config.yaml", str(out))).read_text())
    assert config["name"] == "sft_dpo_kto" and config["launcher"]["env"]["HF_TOKEN"] == REDACTED
    dag = Path(client.download_artifacts(parent.info.run_id, "dag.svg", str(out))).read_text()
    assert dag.startswith("<svg") and all(f">{n}</text>" in dag for n in ("checkpoint", "sft", "dpo", "kto"))
    for name, run in stage.items():
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"stage.yaml", "stage.log"} <= files, name
    log = Path(client.download_artifacts(stage["kto"].info.run_id, "stage.log", str(out / "kto"))).read_text()
    assert "bitsandbytes" in log  # the failed stage's log says why


def test_parent_carries_a_summary_of_final_metrics(tracked_run):
    metrics = tracked_run["parent"].data.metrics
    summary = read_summary(tracked_run["run_dir"])
    assert metrics["sft.train_loss"] == pytest.approx(summary["sft"]["metrics"]["train_loss"])
    assert metrics["dpo.rewards/accuracies"] == pytest.approx(summary["dpo"]["metrics"]["rewards/accuracies"])
    assert "checkpoint.wall_seconds" in metrics and not any(k.startswith("kto.train") for k in metrics)


def test_the_dpo_model_is_registered(tracked_run):
    client, dpo = tracked_run["client"], tracked_run["stage"]["dpo"]
    [version] = client.search_model_versions("name='sft_dpo_kto-dpo'")
    assert version.run_id == dpo.info.run_id and version.source == f"runs:/{dpo.info.run_id}/model"
    files = {Path(a.path).name for a in tracked_run["client"].list_artifacts(dpo.info.run_id, "model")}
    assert {"config.json", "model.safetensors"} <= files


def test_stage_runs_open_on_curves_and_the_parent_carries_the_report(tracked_run):
    client, parent, stage = tracked_run["client"], tracked_run["parent"], tracked_run["stage"]
    summary = read_summary(tracked_run["run_dir"])
    for name in ("sft", "dpo"):
        run = stage[name]
        assert run.data.params["data/rows"] == str(summary[name]["metrics"]["data/rows"])
        assert not [k for k in run.data.metrics if k.startswith("data/")], "one-point data charts above the curves"
        assert len(client.get_metric_history(run.info.run_id, "loss")) > 1
    # MLflow draws named sections (the key before its last `/`) first, alphabetically: DPO's first
    # section's first chart is a training curve, and the held-out values sit beside their curves
    dpo = stage["dpo"]
    sections = sorted({k.rpartition("/")[0] for k in dpo.data.metrics if "/" in k})
    assert not [s for s in sections if s.startswith(("eval_", "data"))], sections
    first = min(k for k in dpo.data.metrics if k.rpartition("/")[0] == sections[0])
    assert len(client.get_metric_history(dpo.info.run_id, first)) > 1, first
    assert "rewards/eval_accuracies" in dpo.data.metrics and "eval_rewards/accuracies" not in dpo.data.metrics
    assert tracked_run["parent"].data.metrics["dpo.eval_rewards/accuracies"] == pytest.approx(
        summary["dpo"]["metrics"]["eval_rewards/accuracies"])  # TRL's names outside the stage run
    assert parent.data.params["dpo.data/rows"] == str(summary["dpo"]["metrics"]["data/rows"])
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    status = subprocess.run([sys.executable, "-m", "workflows.status", str(tracked_run["run_dir"]), "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    links = {s["name"]: s["run_link"] for s in json.loads(status.stdout)["stages"]}
    assert stage["dpo"].info.run_id in links["dpo"] and "mlflow ui --backend-store-uri sqlite:///" in links["dpo"]

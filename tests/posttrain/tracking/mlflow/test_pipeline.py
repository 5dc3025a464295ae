"""MLflow tracking without training: redaction and flattening, the DAG picture, the preflight, and the
run lifecycle (nesting, lineage, resume, cache, true statuses) driven through the tracker against a
real SQLite store. The end-to-end runs are in test_tracking_pipeline.py and test_tracking_server.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from workflows.config import compose
from workflows.report.dag_picture import mermaid, svg
from workflows.mlflow_tracker import RUN_FILE, metric_items
from workflows.planning import build_plan
from posttrain.tracking.redact import REDACTED, flatten, is_secret_key, loggable_params, mlflow_name, param_value, redact
from posttrain.pipeline import StageResult
from workflows.tracking import TrackingError, preflight, tracked

# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_secret_keys_are_recognised_by_name():
    for key in ("hub_token", "HF_TOKEN", "api_key", "WANDB_API_KEY", "password", "db.password", "client_secret",
                "MLFLOW_TRACKING_PASSWORD", "aws_secret_access_key", "privateKey", "key", "Authorization"):
        assert is_secret_key(key), key
    for key in ("pad_token_id", "max_new_tokens", "tokenizer", "learning_rate", "monkey", "keys", "eos_token_id"):
        assert not is_secret_key(key), key


def test_redact_keys_env_values_and_urls():
    config = {
        "trainer": {"hub_token": "hf_abcdefghijklmnopqrstuvwxyz123456", "learning_rate": 0.001},
        "launcher": {"env": {"WANDB_API_KEY": "abc", "EXTRA": "HF_TOKEN=hf_secretsecretsecretsecret12", "N": "4"}},
        "tracking": {"uri": "https://alice:s3cret@mlflow.example.com"},
        "args": ["--token", "hf_abcdefghijklmnopqrstuvwxyz123456"],
    }
    out = redact(config)
    assert out["trainer"] == {"hub_token": REDACTED, "learning_rate": 0.001}
    assert out["launcher"]["env"] == {"WANDB_API_KEY": REDACTED, "EXTRA": f"HF_TOKEN={REDACTED}", "N": "4"}
    assert out["tracking"]["uri"] == f"https://alice:{REDACTED}@mlflow.example.com"
    assert out["args"] == ["--token", REDACTED]
    assert config["trainer"]["hub_token"].startswith("hf_")  # the input is left alone
    command = ["python", "-m", "workflows.run", "++launcher.env.DB_PASSWORD=abc", "stages.dpo.trainer.beta=0.1"]
    assert redact(command)[3:] == [f"++launcher.env.DB_PASSWORD={REDACTED}", "stages.dpo.trainer.beta=0.1"]


def test_flatten_and_mlflow_safe_params():
    config = {"trainer": {"beta": 0.1}, "peft": {"target_modules": ["q_proj", "v_proj"]},
              "data": {"sources": [{"path": "/d/a.jsonl"}, {"path": "/d/b.jsonl"}]}, "odd key(1)": {"x": None}}
    assert flatten(config) == {"trainer.beta": 0.1, "peft.target_modules": ["q_proj", "v_proj"],
                               "data.sources.0.path": "/d/a.jsonl", "data.sources.1.path": "/d/b.jsonl",
                               "odd key(1).x": None}
    params = loggable_params({**config, "long": "x" * 10000, "password": "hunter2"}, prefix="stage")
    assert params["stage.trainer.beta"] == "0.1"
    assert params["stage.odd key_1_.x"] == "null"
    assert params["stage.password"] == REDACTED
    assert len(params["stage.long"]) == 6000 and "truncated from 10000 chars" in params["stage.long"]
    assert len(mlflow_name("k" * 400)) == 250
    assert mlflow_name("a//b/../c") == "a/b/__/c" and param_value(None) == "null"


def test_stage_metric_names_on_the_parent():
    names = metric_items("dpo", {"rewards/accuracies": 0.5, "train_loss": 1, "note": "x", "flag": True})
    assert names == {"dpo.rewards/accuracies": 0.5, "dpo.train_loss": 1.0}


def test_dag_pictures_show_every_stage_and_edge(tmp_path):
    plan = build_plan(compose(["+pipeline=sft_dpo_kto", f"run_dir={tmp_path}/run"]))
    text = mermaid(plan, {"sft": "completed", "kto": "failed"})
    ids = {s.name: f"s{i}" for i, s in enumerate(plan.stages)}
    for stage in plan.stages:
        assert f'{ids[stage.name]}["{stage.name}<br/>[{stage.type}]' in text
        for up in stage.upstream:
            assert f"{ids[up]} --> {ids[stage.name]}" in text
    assert f"style {ids['kto']} fill:#ffcdd2" in text
    picture = svg(plan, {"sft": "completed"})
    assert picture.startswith("<svg") and picture.count("<rect") == len(plan.stages) + 1
    assert picture.count('marker-end="url(#arrow)"') == sum(len(s.upstream) for s in plan.stages)


# ---------------------------------------------------------------------------------------------
# Fast paths never touch MLflow


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
        "from workflows.tracking import tracked, NullTracker\nfrom stages.tracking import report_to\n"
        f"plan = build_plan(compose(['+pipeline=sft_dpo', 'run_dir={tmp_path}/run', 'tracking=none']))\n"
        "with tracked(plan) as tracker:\n"
        "    assert isinstance(tracker, NullTracker)\n"
        "    assert tracker.on_stage_start(plan.stages[0]) == {}\n"
        "assert report_to(plan.stages[1].spec) == 'none'\n"
        "import os; os.environ['POSTTRAIN_TRACKING'] = 'off'  # the orchestrator could not make the run\n"
        f"tracked_plan = build_plan(compose(['+pipeline=sft_dpo', 'run_dir={tmp_path}/run']))\n"
        "assert report_to(tracked_plan.stages[1].spec) == 'none'\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'mlflow imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# Preflight: an unreachable server stops everything before any stage starts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_refused_before_any_stage(proc: subprocess.CompletedProcess, seconds: float, run_dir: Path, uri: str):
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert seconds < 10, f"took {seconds:.1f}s"
    assert f"tracking server {uri} is not reachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(run_dir.glob("*/stage.log")) and not list(run_dir.glob("*/stage.yaml"))


def test_server_down_is_a_clear_error_within_10s(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    proc = run_cli("+pipeline=sft_dpo", f"run_dir={tmp_path}/run", f"tracking.uri={uri}", timeout=60)
    _assert_refused_before_any_stage(proc, time.monotonic() - start, tmp_path / "run", uri)
    assert "Connection refused" in proc.stderr and "tracking=none" in proc.stderr


def test_server_that_never_answers_is_a_clear_error_within_10s(tmp_path):
    with socket.socket() as server:  # accepts connections into its backlog, never replies
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        proc = run_cli("+pipeline=sft_dpo", f"run_dir={tmp_path}/run", f"tracking.uri={uri}", timeout=60)
        _assert_refused_before_any_stage(proc, time.monotonic() - start, tmp_path / "run", uri)
    assert "timed out" in proc.stderr


def test_sqlite_store_in_an_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TrackingError, match="cannot create"):
        preflight(f"sqlite:///{blocker}/sub/mlflow.db")


def test_register_must_name_a_stage():
    from workflows.planning import PlanError

    with pytest.raises(PlanError) as err:
        build_plan(compose(["+pipeline=sft_dpo", "tracking.register=dpoo"]))
    assert any(p.startswith("tracking.register: 'dpoo' is not a stage") and "did you mean 'dpo'" in p
               for p in err.value.problems)


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


def _plan(tmp_path: Path, store, experiment: str):
    return build_plan(compose(["+pipeline=sft_dpo", f"run_dir={tmp_path}/run", f"tracking.uri={store[0]}",
                               f"tracking.experiment={experiment}"]))


def _fake_run(tracker, stage, status="completed", metrics=None) -> tuple[dict, StageResult]:
    """What the launcher does around a stage process, with the process replaced by a few files."""
    env = tracker.on_stage_start(stage)
    folder = Path(stage.stage_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stage.yaml").write_text(json.dumps({**stage.spec, "trainer": {"hub_token": "hf_x" * 10}}))
    (folder / "stage.log").write_text(f"[{stage.name}] training\n")
    if status == "completed":
        (folder / "manifest.json").write_text(json.dumps({"fingerprint": stage.spec.get("fingerprint"),
                                                          "finished_at": time.time(), "metrics": metrics or {}}))
    result = StageResult(stage.name, stage.type, status, stage.spec["model_dir"], {}, wall_seconds=1.5,
                         metrics=metrics or {})
    tracker.on_stage_end(stage, result)
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
        _fake_run(tracker, dpo, status="failed")
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
    assert dpo_run.data.tags["posttrain.input.policy"] == sft.spec["model_dir"] == sft_run.data.tags["posttrain.output_dir"]
    assert dpo_run.data.params["stage.trainer.beta"] == str(dpo.spec["trainer"]["beta"])
    assert parent.data.metrics["sft.train_loss"] == 2.5 and parent.data.metrics["checkpoint.parameters"] == 100.0
    assert parent.data.tags["posttrain.status.dpo"] == "failed"
    stage_yaml = Path(client.download_artifacts(sft_run.info.run_id, "stage.yaml", str(tmp_path)))
    assert "hf_x" not in stage_yaml.read_text() and REDACTED in stage_yaml.read_text()
    record = json.loads((Path(dpo.stage_dir) / RUN_FILE).read_text())
    assert record["run_id"] == dpo_run.info.run_id and record["status"] == "FAILED"


def test_interrupt_kills_then_resume_continues_the_same_run(tmp_path, store):
    plan = _plan(tmp_path, store, "resume")
    with pytest.raises(KeyboardInterrupt), tracked(plan) as tracker:
        _fake_run(tracker, plan.stage("checkpoint"))
        tracker.on_stage_start(plan.stage("sft"))
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) while sft trains
    client = store[1]
    runs = _runs(client, "resume")
    [first_parent] = runs["parents"]
    [sft_run] = runs["sft"]
    assert first_parent.info.status == "KILLED" and sft_run.info.status == "KILLED"

    again = _plan(tmp_path, store, "resume")  # same config: same fingerprints; sft resumes its checkpoint
    again.stage("sft").spec["resume_from"] = "checkpoint-3"
    with tracked(again) as tracker:
        tracker.on_stage_end(again.stage("checkpoint"), StageResult("checkpoint", "checkpoint", "cached",
                                                                    "", {}, metrics={"parameters": 100.0}))
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
        _fake_run(tracker, plan.stage("checkpoint"), status="failed")
    again = _plan(tmp_path, store, "attempts")
    with tracked(again) as tracker:  # resume_from is unset: training starts over
        _fake_run(tracker, again.stage("checkpoint"))
    first, second = _runs(store[1], "attempts")["checkpoint"]
    assert (first.info.status, second.info.status) == ("FAILED", "FINISHED")
    assert second.data.tags["posttrain.previous_attempt_run_id"] == first.info.run_id

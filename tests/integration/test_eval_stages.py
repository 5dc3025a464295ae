"""Eval, gates, synthetic data and on-policy pairs: plan-time validation (fast) and real runs (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import read_summary, run_cli
from tests.eval_helpers import StubServer
from workflows.config import compose
from workflows.planning import PlanError, build_plan
from posttrain.pipeline import StageResult

SFT_EVAL = ["+stage@stages.sft_eval=eval", "stages.sft_eval.models=[sft]", "stages.sft_eval.eval.pairs=null",
            "stages.sft_eval.eval.max_rows=16"]


def plan(*overrides: str, pipeline: str = "sft_dpo"):
    return build_plan(compose([f"+pipeline={pipeline}", "tracking=none", *overrides]))


def problems(*overrides: str, pipeline: str = "sft_dpo") -> list[str]:
    with pytest.raises(PlanError) as err:
        plan(*overrides, pipeline=pipeline)
    return err.value.problems


# ------------------------------------------------------------------------------------------ plan time


def test_eval_measures_each_model_against_its_upstream_reference():
    p = plan()
    evaluation = p.stage("eval")
    assert set(evaluation.upstream) == {"checkpoint", "sft", "dpo"}
    models = {m["label"]: m for m in evaluation.spec["models"]}
    assert models["dpo"]["path"] == p.stage("dpo").spec["model_dir"]
    assert models["dpo"]["reference"]["path"] == p.stage("sft").spec["model_dir"]  # DPO was trained against SFT
    assert "reference" not in models["sft"] and "reference" not in models["checkpoint"]
    assert evaluation.spec["model_dir"] == os.path.join(p.run_dir, "eval", "results")
    assert Path(evaluation.spec["eval"]["tasks"]).is_file() and evaluation.spec["policy"] is None


def test_gate_adds_an_edge_and_names_bad_metrics():
    p = plan(*SFT_EVAL, "stages.dpo.gate={metric: sft_eval/sft/accuracy, min: 0.5}")
    assert "sft_eval" in p.stage("dpo").upstream
    assert [s.name for s in p.stages].index("sft_eval") < [s.name for s in p.stages].index("dpo")
    found = problems(*SFT_EVAL, "stages.dpo.gate={metric: sft_eval/dpo/accuracy, min: 0.5}",
                     "stages.sft.gate={metric: nope/x, max: 1}", "stages.eval.gate={metric: sft_eval/sft/acc, min: 0}",
                     "stages.sft_eval.gate.metric=sft/train_loss")
    assert "stages.dpo.gate.metric: stage 'sft_eval' evaluates sft, not 'dpo'" in found
    assert any(f.startswith("stages.sft.gate.metric: 'nope' is not a stage of this pipeline") for f in found)
    assert any(f.startswith("stages.eval.gate.metric: 'acc' is not an eval metric") for f in found)
    assert "stages.sft_eval.gate: give `min`, `max` or both" in found
    assert "cycle: eval -> dpo -> eval" in problems("stages.dpo.gate={metric: eval/sft/accuracy, min: 0.5}")


def test_eval_config_problems_are_reported_at_once(tmp_path):
    bad = tmp_path / "heldout.jsonl"
    bad.write_text('{"prompt": "add: 1+1", "answer": "2"}\n{"prompt": [], "answer": "x"}\n{"prompt": "x"}\n')
    found = problems(f"stages.eval.eval.tasks={bad}", "stages.eval.eval.checker._target_=stages.demo_tasks.chek",
                     "stages.eval.models=[checkpoint,sft,sft]", "stages.eval.eval.max_rows=0",
                     "stages.eval.trainer.max_steps=3", "stages.eval.eval.pairs=/nope/pairs.jsonl")
    assert any("heldout.jsonl row 2: 'prompt' must be a string or a list" in f for f in found)
    assert any("heldout.jsonl row 3: 'answer'" in f for f in found)
    assert any(f.startswith("stages.eval.eval.checker._target_: module 'stages.demo_tasks'") and "no 'chek'" in f
               for f in found)
    assert "stages.eval.models[2]: 'sft' is listed twice (metrics are named sft/...)" in found
    assert "stages.eval.eval.max_rows: must be a positive number, got 0" in found
    assert any(f.startswith("stages.eval.trainer: eval stages train nothing") for f in found)
    assert "stages.eval.eval.pairs: no such file '/nope/pairs.jsonl'" in found
    [missing] = problems("stages.eval.eval.checker._target_=no_such_package.check")
    assert "no module 'no_such_package'" in missing


def test_inputs_must_come_from_stages_that_make_them():
    found = problems("stages.dpo.data.sources.0.stage=sft", pipeline="sft_dpo")
    assert any(f.startswith("stages.dpo.data.sources[0].stage: 'sft' is a sft stage; it writes model, not a dataset")
               for f in found)
    found = problems("stages.dpo.policy=onpolicy", pipeline="sft_onpolicy_dpo")
    assert any(f.startswith("stages.dpo.policy: 'onpolicy' is a onpolicy stage; it saves dataset") for f in found)


def test_generate_teacher_endpoint_and_key_checked_before_running(monkeypatch):
    monkeypatch.delenv("POSTTRAIN_TEST_KEY", raising=False)
    base = ["stages.generate.generate.teacher.model=served-model"]
    found = problems(*base, "stages.generate.generate.teacher.endpoint=localhost:8000",
                     "stages.generate.generate.teacher.api_key_env=POSTTRAIN_TEST_KEY", pipeline="sft_distill")
    assert any(f.startswith("stages.generate.generate.teacher.endpoint: 'localhost:8000' is not an http(s):// URL")
               for f in found)
    assert any("environment variable POSTTRAIN_TEST_KEY is not set" in f for f in found)
    [secret] = problems(*base, "stages.generate.generate.teacher.endpoint=http://h/v1",
                        "stages.generate.generate.teacher.api_key_env=sk-abc123", pipeline="sft_distill")
    assert "is not an environment variable NAME" in secret
    monkeypatch.setenv("POSTTRAIN_TEST_KEY", "secret-value-42")
    p = plan(*base, "stages.generate.generate.teacher.endpoint=http://h:1/v1/",
             "stages.generate.generate.teacher.api_key_env=POSTTRAIN_TEST_KEY", pipeline="sft_distill")
    teacher = p.stage("generate").spec["generate"]["teacher"]
    assert teacher["endpoint"] == "http://h:1/v1" and "secret-value-42" not in json.dumps(p.stage("generate").spec)
    assert p.stage("generate").upstream == []  # an endpoint teacher needs no model of the pipeline


def test_gate_stops_or_lets_a_stage_run(tmp_path):
    from posttrain.gates import stop

    p = plan(*SFT_EVAL, f"run_dir={tmp_path}", "stages.dpo.gate={metric: sft_eval/sft/accuracy, min: 0.5}")
    dpo = p.stage("dpo")

    def results(accuracy: float) -> dict[str, StageResult]:
        return {"sft_eval": StageResult("sft_eval", "eval", "completed", "", {}, metrics={"sft/accuracy": accuracy})}

    assert stop(dpo, results(0.62)) is None
    gated = stop(dpo, results(0.31))
    assert gated.status == "gated" and gated.reason == "gate sft_eval/sft/accuracy=0.31 < min 0.5"
    assert gated.extra["gate"]["value"] == 0.31 and not gated.extra["gate"]["passed"]


def test_stage_process_refuses_to_start_when_its_gate_fails(tmp_path):
    from posttrain.gates import GATED_EXIT_CODE, enforce

    manifest = tmp_path / "sft_eval" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"metrics": {"sft/accuracy": 0.2}}))
    gate = {"metric": "sft_eval/sft/accuracy", "stage": "sft_eval", "key": "sft/accuracy", "min": 0.5, "max": None,
            "manifest": str(manifest)}
    spec = {"name": "dpo", "stage_dir": str(tmp_path / "dpo"), "gate": gate}
    with pytest.raises(SystemExit) as exit_info:
        enforce(spec)
    assert exit_info.value.code == GATED_EXIT_CODE
    assert json.loads((tmp_path / "dpo" / "gated.json").read_text())["reason"].endswith("< min 0.5")
    manifest.write_text(json.dumps({"metrics": {"sft/accuracy": 0.7}}))
    enforce(spec)  # passes now, and forgets the old verdict
    assert not (tmp_path / "dpo" / "gated.json").exists()


def test_endpoint_client_retries_busy_refuses_bad_key_and_judges(monkeypatch):
    from stages.lib.teacher import EndpointError, EndpointTeacher, judge_verdicts

    settings = {"model": "m", "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 4, "batch_size": 2,
                "timeout": 5.0, "max_retries": 2, "api_key_env": "POSTTRAIN_TEST_KEY"}
    monkeypatch.setenv("POSTTRAIN_TEST_KEY", "right")
    with StubServer(key="right", fail_first=1) as server:
        judge = EndpointTeacher({**settings, "endpoint": server.url}, seed=0)
        assert judge_verdicts(judge, [("reverse: abcd", "dcba"), ("reverse: abcd", "abcd")]) == [True, False]
        assert len(server.requests) == 3 and judge.errors == 0  # one 503, retried
        assert server.headers[0]["Authorization"] == "Bearer right"
        monkeypatch.setenv("POSTTRAIN_TEST_KEY", "wrong")
        with pytest.raises(EndpointError, match="HTTP 401 \\(check api_key_env\\)"):
            EndpointTeacher({**settings, "endpoint": server.url}, seed=0).chat([[{"role": "user", "content": "x"}]])


# ------------------------------------------------------------------------------------------ real runs


def fast(*overrides: str) -> list[str]:
    return ["tracking=none", "launcher.stream_logs=false", *overrides]


@pytest.mark.slow
def test_failed_gate_stops_downstream_stages_and_the_run(tmp_run_dir):
    # base_eval measures the checkpoint; sft may start only if it already solves 99% of the tasks.
    proc = run_cli("+pipeline=sft_dpo", f"run_dir={tmp_run_dir}", *fast(
        "+stage@stages.base_eval=eval", "stages.base_eval.models=[checkpoint]", "stages.base_eval.eval.pairs=null",
        "stages.base_eval.eval.max_rows=16", "stages.sft.gate={metric: base_eval/checkpoint/accuracy, min: 0.99}"))
    assert proc.returncode != 0, proc.stdout[-2000:]
    summary = read_summary(tmp_run_dir)
    assert summary["base_eval"]["status"] == "completed"
    value = summary["base_eval"]["metrics"]["checkpoint/accuracy"]
    assert summary["sft"]["status"] == "gated"
    assert summary["sft"]["reason"] == f"gate base_eval/checkpoint/accuracy={value:.4g} < min 0.99"
    assert summary["sft"]["extra"]["gate"]["metric"] == "base_eval/checkpoint/accuracy"
    assert summary["dpo"]["status"] == "skipped" and summary["dpo"]["reason"] == "upstream 'sft' gated"
    assert summary["eval"]["status"] == "skipped"
    assert not (tmp_run_dir / "sft" / "stage.log").exists()  # the gated stage never started
    assert f"sft: gate base_eval/checkpoint/accuracy={value:.4g} < min 0.99" in proc.stdout  # the console summary
    samples = [json.loads(line) for line in (tmp_run_dir / "base_eval" / "results" / "samples.jsonl").open()]
    assert len(samples) == 16 and {"prompt", "model", "output", "correct"} <= samples[0].keys()


@pytest.mark.slow
def test_endpoint_teacher_writes_a_verified_deduplicated_dataset(tmp_run_dir):
    env = {"POSTTRAIN_TEST_KEY": "test-key-123"}
    with StubServer(key="test-key-123", fail_first=1) as server:
        proc = run_cli("name=synthetic", f"run_dir={tmp_run_dir}", *fast(
            "+stage@stages.generate=generate", "+data@stages.generate.data=prompts_demo",
            "stages.generate.data.sources.0.max_rows=8", f"stages.generate.generate.teacher.endpoint={server.url}",
            "stages.generate.generate.teacher.model=stub-model",
            "stages.generate.generate.teacher.api_key_env=POSTTRAIN_TEST_KEY",
            "stages.generate.generate.num_instructions=8", "stages.generate.generate.instructions_per_request=4",
            "stages.generate.generate.dedup_threshold=0.8"), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    metrics = read_summary(tmp_run_dir)["generate"]["metrics"]
    assert metrics["generate/candidates"] == 7 and metrics["generate/kept"] == 2
    assert {k.removeprefix("generate/dropped/"): v for k, v in metrics.items() if "/dropped/" in k} == {
        "duplicate": 1, "near_duplicate": 1, "copies_seed": 1, "verifier": 1, "empty_response": 1}
    rows = [json.loads(line) for line in (tmp_run_dir / "generate" / "dataset" / "data.jsonl").open()]
    assert [r["messages"] for r in rows] == [
        [{"role": "user", "content": "reverse: wxyz"}, {"role": "assistant", "content": "zyxw"}],
        [{"role": "user", "content": "copy: qwer"}, {"role": "assistant", "content": "qwer"}]]
    assert all(h.get("Authorization") == "Bearer test-key-123" for h in server.headers)
    assert server.requests[0]["model"] == "stub-model"
    for leaked in ("stage.yaml", "stage.log", "manifest.json"):
        assert "test-key-123" not in (tmp_run_dir / "generate" / leaked).read_text()


@pytest.mark.slow
def test_local_teacher_data_trains_the_next_stage(tmp_run_dir):
    proc = run_cli("+pipeline=sft_distill", f"run_dir={tmp_run_dir}", *fast(
        "stages.sft.enabled=false", "stages.eval.enabled=false", "stages.generate.generate.teacher.model=checkpoint",
        "stages.generate.data.sources.0.max_rows=12",
        "stages.generate.generate.verifier._target_=tests.eval_helpers.accept_nonempty",
        "stages.sft_distill.policy=checkpoint", "stages.sft_distill.trainer.max_steps=3",
        "stages.sft_distill.trainer.per_device_train_batch_size=4"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = read_summary(tmp_run_dir)
    kept = summary["generate"]["metrics"]["generate/kept"]
    assert kept > 0 and summary["generate"]["metrics"]["generate/candidates"] == 24  # 12 seeds x 2 responses
    assert summary["sft_distill"]["status"] == "completed"
    assert summary["sft_distill"]["metrics"]["data/rows"] == kept  # trained on exactly the kept rows
    assert summary["sft_distill"]["inputs"]["datasets"] == [str(tmp_run_dir / "generate" / "dataset")]
    from tests.test_pipelines_e2e import changed

    assert changed(str(tmp_run_dir / "checkpoint" / "model"), str(tmp_run_dir / "sft_distill" / "model"))


@pytest.mark.slow
def test_onpolicy_pairs_train_dpo_and_the_eval_compares_all_models(tmp_run_dir):
    # The checkpoint stands in for the SFT model (one stage less): its samples are all wrong, so every
    # pair has the reference answer as chosen.
    proc = run_cli("+pipeline=sft_onpolicy_dpo", f"run_dir={tmp_run_dir}", *fast(
        "stages.sft.enabled=false", "stages.onpolicy.policy=checkpoint", "stages.dpo.policy=checkpoint",
        "stages.eval.models=[checkpoint,dpo]", "stages.onpolicy.data.sources.0.max_rows=24",
        "stages.onpolicy.onpolicy.samples_per_prompt=2", "stages.dpo.trainer.max_steps=2",
        "stages.dpo.trainer.per_device_train_batch_size=4", "stages.dpo.data.eval_sources=[]",
        "stages.eval.eval.max_rows=16"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = read_summary(tmp_run_dir)
    onpolicy = summary["onpolicy"]["metrics"]
    assert onpolicy["onpolicy/prompts"] == 24 and onpolicy["onpolicy/pairs"] > 0
    assert onpolicy["onpolicy/pairs"] == onpolicy.get("onpolicy/prompts_sampled", 0) + onpolicy.get(
        "onpolicy/prompts_reference", 0)
    pairs = [json.loads(line) for line in (tmp_run_dir / "onpolicy" / "dataset" / "data.jsonl").open()]
    assert len(pairs) == onpolicy["onpolicy/pairs"] and all(p["chosen"] != p["rejected"] for p in pairs)
    kto = [json.loads(line) for line in (tmp_run_dir / "onpolicy" / "dataset" / "kto.jsonl").open()]
    assert {type(r["label"]) for r in kto} == {bool}
    assert summary["dpo"]["metrics"]["data/rows"] == onpolicy["onpolicy/pairs"]
    metrics = summary["eval"]["metrics"]
    for model in ("checkpoint", "dpo"):
        assert {f"{model}/accuracy", f"{model}/accuracy_seen", f"{model}/accuracy_unseen", f"{model}/pref_accuracy",
                f"{model}/ppl"} <= metrics.keys()
    assert "dpo/reward_accuracy" in metrics and "checkpoint/reward_accuracy" not in metrics  # dpo's reference
    assert json.loads((tmp_run_dir / "eval" / "manifest.json").read_text())["references"] == {
        "dpo": str(tmp_run_dir / "checkpoint" / "model")}
    assert "task accuracy" in proc.stdout and "reward_accuracy" in proc.stdout  # the side-by-side tables

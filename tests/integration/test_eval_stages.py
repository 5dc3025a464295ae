"""Eval, gates, synthetic data and on-policy pairs, for real: tiny models trained and measured through the
CLI, a teacher behind a stub OpenAI-compatible server. Their plan-time checks are in tests/posttrain/stage_types/."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import read_summary, run_cli
from tests.eval_helpers import StubServer

pytestmark = pytest.mark.slow


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


def fast(*overrides: str) -> list[str]:
    return ["tracking=none", "launcher.stream_logs=false", *overrides]


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
    assert summary["sft_distill"]["inputs"]["datasets"] == [os.path.realpath(tmp_run_dir / "generate" / "dataset")]
    from tests.integration.test_pipelines_e2e import changed

    assert changed(str(tmp_run_dir / "checkpoint" / "model"), str(tmp_run_dir / "sft_distill" / "model"))


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
        "dpo": os.path.realpath(tmp_run_dir / "checkpoint" / "model")}  # its store entry
    assert "task accuracy" in proc.stdout and "reward_accuracy" in proc.stdout  # the side-by-side tables

    # the same eval again: the checkpoint's numbers come from the evaluation cache (same weights, rows,
    # settings), dpo is measured again (scored against its reference, never cached)
    samples = (tmp_run_dir / "eval" / "results" / "samples.jsonl").read_text()
    again = run_cli("+pipeline=sft_onpolicy_dpo", f"run_dir={tmp_run_dir}", "force=[eval]", *fast(
        "stages.sft.enabled=false", "stages.onpolicy.policy=checkpoint", "stages.dpo.policy=checkpoint",
        "stages.eval.models=[checkpoint,dpo]", "stages.onpolicy.data.sources.0.max_rows=24",
        "stages.onpolicy.onpolicy.samples_per_prompt=2", "stages.dpo.trainer.max_steps=2",
        "stages.dpo.trainer.per_device_train_batch_size=4", "stages.dpo.data.eval_sources=[]",
        "stages.eval.eval.max_rows=16"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    attempt = (tmp_run_dir / "eval" / "stage.log").read_text().rsplit("\n==> ", 1)[-1]  # this attempt's lines
    assert "[eval] checkpoint: measured before with these weights" in attempt
    assert "[eval] dpo: measured before" not in attempt and "[eval] dpo: {" in attempt
    assert read_summary(tmp_run_dir)["eval"]["metrics"] | {"eval/seconds": 0} == metrics | {"eval/seconds": 0}
    assert (tmp_run_dir / "eval" / "results" / "samples.jsonl").read_text() == samples  # every row, as before

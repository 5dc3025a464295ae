"""The RL stages train for real, in one fan-in pipeline through the CLI, tracked in MLflow (SQLite):

    checkpoint -> sft -> rm (reward; ZeRO-2, 2 processes)
                  {sft, rm} -> grpo (verifier + the trained reward model; ZeRO-3, 2 processes)
                  {sft, rm} -> rloo (LoRA: the reference is the policy with its adapter disabled)

One run serves every assertion: weights change, per-function reward curves and the KL reach MLflow,
the KL is measured against the SFT model (0 at step 1, when policy and reference are the same
weights), GRPO's reward-model scores are the trained reward model's own, the reward model ranks
held-out pairs above chance; then a re-run is cached and an interrupted RLOO resumes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import read_summary, run_cli

pytestmark = pytest.mark.slow

STEPS = 3
OVERRIDES = [
    "stages.eval.enabled=false", "stages.sft.trainer.max_steps=40", "stages.sft.trainer.save_steps=100",
    "stages.sft.data.eval_sources=[]",
    # the reward model: 2 processes under ZeRO-2, held-out pairs for its accuracy
    "+deepspeed@stages.rm.deepspeed=zero2", "stages.rm.resources.processes_per_node=2",
    "stages.rm.trainer.max_steps=30", "stages.rm.trainer.per_device_train_batch_size=16",
    "stages.rm.trainer.logging_steps=10", "stages.rm.trainer.save_steps=100",
    # grpo: the verifier and the reward model, 2 processes under ZeRO-3 (weights and the reward model sharded)
    "+deepspeed@stages.grpo.deepspeed=zero3", "stages.grpo.resources.processes_per_node=2",
    # rloo: LoRA from the same SFT model, one process, checkpoints to resume from
    "+stage@stages.rloo=rloo", "+data@stages.rloo.data=prompts_rl", "+peft@stages.rloo.peft=lora", "stages.rloo.peft.r=4",
    "stages.rloo.trainer.save_steps=2",
    # a barely trained SFT model gets every demo answer wrong: the reward model's scores give RLOO a signal
    "stages.rloo.rloo.rewards=[{name: correct, verifier: {_target_: demo.tasks.check}}, {name: rm, model: rm}]",
]
for _name in ("grpo", "rloo"):
    OVERRIDES += [f"stages.{_name}.data.sources.0.max_rows=64", f"stages.{_name}.trainer.max_steps={STEPS}",
                  f"stages.{_name}.trainer.logging_steps=1", f"stages.{_name}.trainer.num_generations=4",
                  f"stages.{_name}.trainer.per_device_train_batch_size=8", f"stages.{_name}.{_name}.log_completions=8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("rl")
    run_dir, db = base / "run", base / "mlflow.db"
    args = ["+pipeline=sft_rm_grpo", f"run_dir={run_dir}", f"tracking.uri=sqlite:///{db}", *OVERRIDES]
    proc = run_cli(*args, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return {"run_dir": run_dir, "db": db, "args": args, "proc": proc}


def manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def digest(model_dir: Path) -> str:
    from transformers import AutoModelForCausalLM

    from stages.lib.models import model_digest

    return model_digest(AutoModelForCausalLM.from_pretrained(model_dir))


def test_rl_stages_start_from_sft_train_and_keep_the_sft_model_as_reference(run):
    run_dir = run["run_dir"]
    summary = read_summary(run_dir)
    assert {n: s["status"] for n, s in summary.items()} == {n: "completed" for n in
                                                            ("checkpoint", "sft", "rm", "grpo", "rloo")}
    sft_out = run_dir / "sft" / "model"
    sft_digest = digest(sft_out)
    for name, world in (("grpo", 2), ("rloo", 1)):
        m = manifest(run_dir, name)
        assert m["world_size"] == world and m["metrics"]["global_step"] == STEPS
        assert m["initial_weights_digest"] == sft_digest, f"{name} did not start from the SFT weights"
        assert digest(run_dir / name / "model") != sft_digest, f"{name} saved unchanged weights"
        assert summary[name]["inputs"]["reference_model"] == os.path.realpath(sft_out)  # its store entry
    assert "adapter disabled" in manifest(run_dir, "rloo")["reference_note"]
    assert (run_dir / "rloo" / "adapter" / "adapter_config.json").is_file()
    assert manifest(run_dir, "grpo")["rewards"] == {"correct": 1.0, "rm": 0.5}


def test_reward_model_is_a_sequence_classifier_that_ranks_held_out_pairs_above_chance(run):
    from transformers import AutoConfig

    run_dir = run["run_dir"]
    m = manifest(run_dir, "rm")
    assert m["world_size"] == 2
    config = AutoConfig.from_pretrained(run_dir / "rm" / "model")
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
    # eval_accuracy: how often score(prompt + chosen) > score(prompt + rejected) on prefs_eval.jsonl
    assert m["metrics"]["eval_accuracy"] > 0.6, m["metrics"]


def test_reward_curves_per_function_and_the_kl_reach_mlflow(run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run['db']}")
    experiment = client.get_experiment_by_name("sft_rm_grpo")
    stages = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get("posttrain.role") == "stage"}
    for name, functions in (("grpo", ("correct", "rm")), ("rloo", ("correct", "rm"))):
        run_id = stages[name].info.run_id
        for function in functions:
            curve = client.get_metric_history(run_id, f"rewards/{function}/mean")
            assert [p.step for p in curve] == list(range(1, STEPS + 1)), (name, function)
        kl = sorted(client.get_metric_history(run_id, "kl"), key=lambda p: p.step)
        assert [p.step for p in kl] == list(range(1, STEPS + 1))
        # step 1: the policy is still the SFT model, so its KL to the reference (the SFT model) is 0
        assert abs(kl[0].value) < 1e-6 and any(abs(p.value) > 1e-6 for p in kl[1:]), (name, [p.value for p in kl])
        artifacts = [a.path for a in client.list_artifacts(run_id, name)]
        assert f"{name}/completions.json" in artifacts
        table = json.loads(Path(client.download_artifacts(run_id, f"{name}/completions.json")).read_text())
        assert {"step", "prompt", "completion", "reward", "advantage", "reward/correct"} <= set(table["columns"])


def test_grpo_scores_with_the_trained_reward_model(run):
    """The rm rewards in GRPO's completions log are the trained reward model's scores of prompt + completion."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_dir = run["run_dir"]
    rows = [json.loads(line) for line in (run_dir / "grpo" / "completions.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == list(range(1, STEPS + 1)) and len(rows) == 8 * STEPS
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "rm" / "model")
    rm = AutoModelForSequenceClassification.from_pretrained(run_dir / "rm" / "model").eval()
    texts = [tokenizer.apply_chat_template(r["prompt"] + [{"role": "assistant", "content": r["completion"]}],
                                           tokenize=False) for r in rows]
    with torch.inference_mode():
        batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
        scores = rm(**batch).logits[:, 0].tolist()
    logged = [r["rewards"]["rm"] for r in rows]
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(logged, scores)), list(zip(logged, scores))
    assert len({round(s, 4) for s in scores}) > 1  # a constant would say nothing
    for r in rows:  # the total is the weighted sum
        assert math.isclose(r["reward"], 1.0 * r["rewards"]["correct"] + 0.5 * r["rewards"]["rm"], abs_tol=1e-6)


def test_a_rerun_is_cached_and_an_interrupted_stage_resumes(run):
    run_dir = run["run_dir"]
    again = run_cli(*run["args"], "tracking=none", timeout=300)
    assert again.returncode == 0, again.stdout[-3000:]
    assert {s["status"] for s in read_summary(run_dir).values()} == {"cached"}
    changed = run_cli(*run["args"], "tracking=none", "dry_run=true", "stages.grpo.grpo.rewards.1.weight=0.25")
    assert "grpo        [grpo] config changed: stages.grpo.grpo.rewards[1].weight" in changed.stdout, changed.stdout
    assert "rloo        [rloo] cached" in changed.stdout and "rm          [reward] cached" in changed.stdout
    # rloo as if killed after its step-2 checkpoint: no manifest, no later checkpoint
    (run_dir / "rloo" / "manifest.json").unlink()
    for later in (run_dir / "rloo" / "checkpoints").glob("checkpoint-*"):
        if later.name != "checkpoint-2":
            shutil.rmtree(later)
    resumed = run_cli(*run["args"], "tracking=none", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "rloo        [rloo] resume from checkpoint-2" in resumed.stdout
    m = manifest(run_dir, "rloo")
    assert m["resumed_from"].endswith("checkpoint-2") and m["metrics"]["global_step"] == STEPS
    steps = [json.loads(line)["step"] for line in (run_dir / "rloo" / "completions.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and {s: steps.count(s) for s in set(steps)} == {1: 8, 2: 8, 3: 8}

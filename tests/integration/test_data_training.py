"""Every format trains on the tiny model, and the SFT loss covers exactly the response tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_summary, run_cli

pytestmark = pytest.mark.slow

TINY_TOKENIZER = ROOT / "demo" / "tiny_tokenizer"
THINK = "<think>ab backwards</think>ba"


def sft_trainer(tmp_path: Path, fmt: str, rows: list[dict]):
    """An SFTTrainer built the way stages/sft.py builds it, over `rows` of format `fmt`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTTrainer

    from posttrain.spec import StageSpec
    from stages.lib.data import load_stage_data
    from stages.sft import build_config

    source = tmp_path / f"{fmt}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = StageSpec.from_dict({
        "name": "sft", "type": "sft", "stage_dir": str(tmp_path), "model_dir": str(tmp_path / "model"), "seed": 0,
        # the model is built below: of the policy only its tokenizer is read
        "policy": {"ref": "checkpoint", "path": str(tmp_path / "unused"), "tokenizer": str(TINY_TOKENIZER)},
        "trainer": {"assistant_only_loss": True, "max_length": 64, "report_to": "none"},
        "data": {"format": fmt, "sources": [{"path": str(source)}], "seed": 0, "shuffle": False}})
    data = load_stage_data(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    trainer = SFTTrainer(model=LlamaForCausalLM(config), args=build_config(spec, data.conversational),
                         train_dataset=data.train, processing_class=tokenizer)
    return trainer, tokenizer


def loss_tokens(trainer, tokenizer, index: int = 0) -> tuple[str, str]:
    """(the text of the tokens that carry loss, the whole text) of one processed training row."""
    row = trainer.train_dataset[index]
    labeled = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    return tokenizer.decode(labeled), tokenizer.decode(row["input_ids"])


@pytest.mark.parametrize("fmt, row", [
    ("messages", {"messages": [{"role": "user", "content": "reverse: ab"}, {"role": "assistant", "content": THINK}]}),
    ("alpaca", {"instruction": "reverse", "input": "ab", "output": THINK}),
    ("sharegpt", {"conversations": [{"from": "human", "value": "reverse: ab"}, {"from": "gpt", "value": THINK}]}),
    ("prompt_completion", {"prompt": [{"role": "user", "content": "reverse: ab"}],
                           "completion": [{"role": "assistant", "content": THINK}]}),
])
def test_conversation_loss_covers_exactly_the_assistant_response_and_its_end_token(tmp_path, fmt, row):
    trainer, tokenizer = sft_trainer(tmp_path, fmt, [row])
    carried, whole = loss_tokens(trainer, tokenizer)
    assert carried == THINK + "<|end|>"  # the chain of thought is trained on, verbatim
    assert whole.endswith("<|assistant|>" + THINK + "<|end|>") and "<|user|>" in whole


def test_multi_turn_loss_covers_every_assistant_turn_and_no_user_turn(tmp_path):
    turns = [("len: abcd", "4"), ("and: ab", "2")]
    messages = [m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
    trainer, tokenizer = sft_trainer(tmp_path, "messages", [{"messages": messages}])
    assert loss_tokens(trainer, tokenizer)[0] == "4<|end|>2<|end|>"


def test_plain_prompt_completion_loss_covers_the_completion_and_eos(tmp_path):
    trainer, tokenizer = sft_trainer(tmp_path, "prompt_completion", [{"prompt": "Q: copy: ab\nA:", "completion": " ab"}])
    carried, whole = loss_tokens(trainer, tokenizer)
    assert carried == " ab<|end|>" and whole == "Q: copy: ab\nA: ab<|end|>"
    assert trainer.args.assistant_only_loss is False  # plain strings have no assistant turns


def test_plain_text_loss_covers_every_token(tmp_path):
    trainer, tokenizer = sft_trainer(tmp_path, "text", [{"text": "Q: copy: ab\nA: ab"}])
    carried, whole = loss_tokens(trainer, tokenizer)
    assert carried == whole == "Q: copy: ab\nA: ab<|end|>"


def test_every_format_trains_through_the_formats_pipeline(tmp_path):
    """checkpoint -> sft (messages+alpaca+sharegpt+chat prompt/completion, weighted) -> sft_plain (text +
    prompt/completion strings) -> dpo (plain pairs, implicit prompt); sft -> kto (chat pairs unpaired)."""
    from safetensors.torch import load_file

    run_dir = tmp_path / "formats"
    steps = [f"stages.{s}.trainer.{k}={v}" for s in ("sft", "sft_plain", "dpo", "kto")
             for k, v in (("max_steps", 2), ("logging_steps", 1), ("save_steps", 100))]
    proc = run_cli("+pipeline=formats", f"run_dir={run_dir}", "tracking=none", *steps,
                   "stages.kto.data.sources.0.max_rows=64", "stages.kto.data.eval_sources=[]",
                   env={"POSTTRAIN_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mixture of 665 rows: data/formats/messages.jsonl 266 (40%)" in proc.stdout  # shown before training
    summary = read_summary(run_dir)
    assert {name: s["status"] for name, s in summary.items()} == dict.fromkeys(
        ("checkpoint", "sft", "sft_plain", "kto", "dpo"), "completed")
    assert summary["sft"]["metrics"]["data/rows"] == 665 and summary["sft"]["metrics"]["data/eval_rows"] == 35
    assert summary["sft_plain"]["metrics"]["data/rows"] == 400
    assert summary["kto"]["metrics"]["data/rows"] == 128  # 64 pairs, each a desirable and an undesirable row
    assert summary["dpo"]["metrics"]["data/rows"] == 200
    for name, upstream in (("sft_plain", "sft"), ("dpo", "sft_plain"), ("kto", "sft")):
        before = load_file(str(run_dir / upstream / "model" / "model.safetensors"))
        after = load_file(str(run_dir / name / "model" / "model.safetensors"))
        assert any(not (before[k] == after[k]).all() for k in before), f"{name} did not change the weights"
    manifest = json.loads((run_dir / "dpo" / "manifest.json").read_text())
    assert list(manifest["data_fingerprints"]) == [str(ROOT / "data/formats/prefs_implicit.jsonl")]

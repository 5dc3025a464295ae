"""stages/lib/eval_cache.py: the key follows everything that decides an evaluation's numbers, and an
entry comes back as it was written (the reuse by a real eval stage is in tests/integration/test_eval_stages.py)."""

from __future__ import annotations

import yaml

from posttrain.verifiers import load_verifier
from stages.lib import eval_cache
from tests.conftest import ROOT

SETTINGS = {"max_new_tokens": 8, "batch_size": 4, "max_length": 64, "extract": "none",
            "checker": {"_target_": "demo.tasks.check"}}
TASKS = [{"prompt": "copy: a b", "answer": "a b", "task": "copy", "seen": True}]
PAIRS = [("say x", "x", "y")]


def tiny():
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / "demo" / "tiny_tokenizer"))
    sizes = yaml.safe_load((ROOT / "conf" / "model" / "tiny.yaml").read_text())["config"]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **sizes)
    return LlamaForCausalLM(config), tokenizer


def test_the_key_changes_with_weights_rows_settings_template_and_checker(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path))
    model, tokenizer = tiny()
    checker = load_verifier(SETTINGS["checker"])
    base = eval_cache.key(model, tokenizer, SETTINGS, TASKS, PAIRS, checker)
    assert eval_cache.key(model, tokenizer, dict(SETTINGS), list(TASKS), list(PAIRS), checker) == base
    others = [
        eval_cache.key(model, tokenizer, {**SETTINGS, "max_new_tokens": 16}, TASKS, PAIRS, checker),
        eval_cache.key(model, tokenizer, SETTINGS, [{**TASKS[0], "answer": "b a"}], PAIRS, checker),
        eval_cache.key(model, tokenizer, SETTINGS, TASKS, [("say x", "x", "z")], checker),
        eval_cache.key(model, tokenizer, SETTINGS, TASKS, PAIRS, load_verifier(
            {"_target_": "tests.eval_helpers.accept_nonempty"})),
    ]
    tokenizer.chat_template = tokenizer.chat_template + " "
    others.append(eval_cache.key(model, tokenizer, SETTINGS, TASKS, PAIRS, checker))
    tokenizer.chat_template = tokenizer.chat_template[:-1]
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1e-3  # one weight
    others.append(eval_cache.key(model, tokenizer, SETTINGS, TASKS, PAIRS, checker))
    assert len({base, *others}) == len(others) + 1, others


def test_an_entry_reads_back_and_a_broken_one_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path))
    assert eval_cache.read("0" * 64) is None
    samples = [{"task": "copy", "seen": True, "prompt": "copy: a b", "answer": "a b", "output": "a b", "correct": True}]
    eval_cache.write("1" * 64, {"accuracy": 1.0, "ppl": 3.5}, samples)
    assert eval_cache.read("1" * 64) == ({"accuracy": 1.0, "ppl": 3.5}, samples)
    (tmp_path / "evals" / ("2" * 64 + ".json")).write_text('{"metrics": [1')  # cut short
    assert eval_cache.read("2" * 64) is None

"""The reference log-prob cache (stages/lib/ref_cache.py) with TRL's real trainers on a tiny model.

A hit must give exactly the numbers TRL computes; anything that changes those numbers (the
reference weights, the tokens, max_length) must miss; what does not (beta, the loss) must hit.
"""

from __future__ import annotations

import pytest

from posttrain.spec import StageSpec
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TOKENIZER = ROOT / "demo" / "tiny_tokenizer"
# the cache reads only the stage's name (for its log lines); the trainers here write nothing to stage_dir
SPEC = StageSpec(name="test", type="dpo", stage_dir="unused", model_dir="unused/model", seed=0)


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer, config


def model(config, seed: int = 0):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def pairs():
    from datasets import Dataset

    rows = [{"prompt": f"reverse: {w}", "chosen": f" {w[::-1]}", "rejected": f" {w}"}
            for w in ("abcd", "wxyz", "moon", "tree", "lamp", "rock", "bird", "fish")]
    return Dataset.from_list(rows)


def dpo(tmp_path, tokenizer, config, cached: bool, seed: int = 0, **args):
    from trl import DPOConfig, DPOTrainer

    from stages.lib import ref_cache
    from stages.lib.models import model_digest

    policy = model(config, seed)
    trainer_cls = ref_cache.caching(DPOTrainer, SPEC, model_digest(policy)) if cached else DPOTrainer
    settings = {"beta": 0.1, "max_length": 32, **args}
    config_args = DPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", disable_tqdm=True,
                            per_device_train_batch_size=4, precompute_ref_log_probs=True, **settings)
    return trainer_cls(model=policy, args=config_args, train_dataset=pairs(), processing_class=tokenizer)


def ref_columns(trainer) -> list[list[float]]:
    return [trainer.train_dataset["ref_chosen_logps"], trainer.train_dataset["ref_rejected_logps"]]


def test_dpo_hits_give_trls_numbers_and_only_what_matters_misses(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    tokenizer, config = tiny
    first = dpo(tmp_path, tokenizer, config, cached=True)
    assert first.ref_logps_cache["train"]["hit"] is False
    assert len(list((tmp_path / "cache" / "ref_logps").iterdir())) == 1

    other_beta = dpo(tmp_path, tokenizer, config, cached=True, beta=0.5, loss_type=["ipo"])
    assert other_beta.ref_logps_cache["train"]["hit"] is True
    plain_trl = dpo(tmp_path, tokenizer, config, cached=False)
    assert ref_columns(other_beta) == ref_columns(first) == ref_columns(plain_trl)

    assert dpo(tmp_path, tokenizer, config, cached=True, max_length=8).ref_logps_cache["train"]["hit"] is False
    other_weights = dpo(tmp_path, tokenizer, config, cached=True, seed=1)
    assert other_weights.ref_logps_cache["train"]["hit"] is False
    assert ref_columns(other_weights) != ref_columns(first)
    assert len(list((tmp_path / "cache" / "ref_logps").iterdir())) == 3  # no half-written entries beside them


def test_kto_reuses_its_own_entries(tmp_path, tiny, monkeypatch):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from stages.lib import ref_cache
    from stages.lib.models import model_digest

    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    tokenizer, config = tiny
    rows = [{"prompt": f"reverse: {w}", "completion": f" {w[::-1] if i % 2 else w}", "label": bool(i % 2)}
            for i, w in enumerate(("abcd", "wxyz", "moon", "tree", "lamp", "rock", "bird", "fish"))]

    def kto(beta: float):
        policy = model(config)
        args = KTOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", disable_tqdm=True,
                         per_device_train_batch_size=4, precompute_ref_log_probs=True, beta=beta, max_length=32)
        cls = ref_cache.caching(KTOTrainer, SPEC, model_digest(policy))
        return cls(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)

    first, second = kto(0.1), kto(0.3)
    assert (first.ref_logps_cache["train"]["hit"], second.ref_logps_cache["train"]["hit"]) == (False, True)
    assert first.train_dataset["ref_logps"] == second.train_dataset["ref_logps"]

"""Models in and out of a stage: tokenizer and model loading, LoRA, weight digests, the saved model dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from posttrain.artifacts import ADAPTER
from posttrain.registry import STAGE_TYPES
from posttrain.spec import ModelRef, StageSpec
from posttrain.stage_types.rl import REWARD_MODEL
from stages.lib.common import is_main_process
from stages.lib.distributed import gathered_digest, partitioned, zero3_enabled


def load_tokenizer(model: ModelRef, spec: StageSpec) -> Any:
    """The tokenizer of `model`, with the configured chat template if one is given."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_path, revision=model.revision)
    if spec.chat_template:
        tokenizer.chat_template = Path(spec.chat_template).read_text()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model: ModelRef, spec: StageSpec, scorer: bool = False) -> Any:
    """A causal LM from a local dir or hub id, in the dtype training will use; `scorer`: the same
    weights with a one-output sequence-classification head (a reward model, or the start of one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dtype = torch.float32 if not torch.cuda.is_available() else torch.bfloat16
    if spec.trainer.get("bf16") is False and spec.trainer.get("fp16") is not True:
        dtype = torch.float32
    if not scorer:
        return AutoModelForCausalLM.from_pretrained(model.path, revision=model.revision, dtype=dtype)
    loaded = AutoModelForSequenceClassification.from_pretrained(model.path, revision=model.revision, dtype=dtype,
                                                                num_labels=1)
    if loaded.config.pad_token_id is None:  # the score is read at the last non-pad token of each row
        loaded.config.pad_token_id = load_tokenizer(model, spec).pad_token_id
    return loaded


def lora_config(peft: dict[str, Any] | None, task_type: str = "CAUSAL_LM") -> Any:
    """peft's LoraConfig; task_type SEQ_CLS also trains (and saves) the new score head in full."""
    if not peft:
        return None
    from peft import LoraConfig

    keys = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_dora")
    return LoraConfig(task_type=task_type, **{k: peft[k] for k in keys if k in peft})


def weights_digest(named_tensors: Any) -> str:
    """sha256 over (name, float32 bytes) of every tensor, in name order: `same weights` as a string."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def model_digest(model: Any) -> str:
    if partitioned(model):  # ZeRO-3: this rank holds shards only
        return gathered_digest(model)
    return weights_digest(model.named_parameters())


def merge_saved_adapter(spec: StageSpec, adapter_dir: str, model_dir: str) -> None:
    """Under ZeRO-3 each rank holds a shard of every weight, so the live model cannot be merged:
    merge the saved (gathered) adapter into a fresh full copy of the base model instead. Rank 0 only."""
    from peft import PeftModel
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    assert spec.policy is not None
    unset_hf_deepspeed_config()  # training is over: load the base whole, not partitioned
    base = load_model(spec.policy, spec, scorer=STAGE_TYPES[spec.type].output == REWARD_MODEL)
    PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().save_pretrained(model_dir)


def save_model(trainer: Any, tokenizer: Any, spec: StageSpec) -> str:
    """Save a plain HF model dir (weights, config, tokenizer, chat template) for the next stage.

    A LoRA adapter is saved unmerged in <stage>/adapter and merged into <stage>/model, so every
    downstream stage receives a full model whatever the upstream trained.
    """
    model_dir = spec.model_dir
    model = trainer.model
    if spec.peft:
        adapter_dir = os.path.join(spec.stage_dir, ADAPTER)
        trainer.save_model(adapter_dir)
        if spec.peft.get("merge", True) and is_main_process():
            if zero3_enabled():  # this rank holds shards only: merge the gathered, saved adapter instead
                merge_saved_adapter(spec, adapter_dir, model_dir)
            else:
                model = trainer.accelerator.unwrap_model(model).merge_and_unload()
                model.save_pretrained(model_dir)
    else:
        trainer.save_model(model_dir)  # gathers ZeRO-3 shards into full weights
    if is_main_process():
        tokenizer.save_pretrained(model_dir)
    trainer.accelerator.wait_for_everyone()
    return model_dir

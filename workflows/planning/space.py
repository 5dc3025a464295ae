"""Will the stages about to run fit on the stage store's disk? An estimate, printed as a warning before any run.

What a training stage writes is predictable: its model dir (the weights of the model it starts
from) and, with a full fine-tune, checkpoints of weights plus AdamW's two moments (3 x the fp32
weights each; `save_total_limit` of them kept, else one per `save_steps`). The starting weights are
the files of a local dir or a hub cache snapshot, or, for a model built from `model.config`, the
parameter count of a decoder-only transformer with those sizes. A stage whose size cannot be told
adds nothing, so the estimate is a floor, never a false alarm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from posttrain.pipeline import Plan, PlannedStage
from posttrain.refs import CHECKPOINT
from posttrain.registry import STAGE_TYPES
from workflows.launchers.stage_log import free_bytes
from workflows.planning.models import cached_snapshot

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
CHECKPOINT_FACTOR = 3  # weights + AdamW's exp_avg and exp_avg_sq, all fp32


def _files_bytes(folder: Path) -> int | None:
    sizes = [p.stat().st_size for pattern in WEIGHT_FILES for p in folder.glob(pattern) if p.is_file()]
    return sum(sizes) or None


def _vocab_size(tokenizer: str | None) -> int | None:
    path = Path(tokenizer or "") / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return len(data["model"]["vocab"]) + len(data.get("added_tokens") or [])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _built_bytes(model: dict[str, Any]) -> int | None:
    """fp32 bytes of a decoder-only transformer built from `model.config` (LlamaConfig-style keys)."""
    config = model.get("config") or {}
    try:
        hidden, layers, inner = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
        heads = config.get("num_attention_heads") or 1
        kv = hidden * (config.get("num_key_value_heads") or heads) // heads
    except KeyError:
        return None
    vocab = config.get("vocab_size") or _vocab_size(model.get("tokenizer"))
    if not vocab:
        return None
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    per_layer = hidden * (2 * hidden + 2 * kv) + 3 * hidden * inner + 2 * hidden
    return 4 * (embeddings + layers * per_layer + hidden)


def _model_bytes(plan: Plan, name: str, seen: set[str]) -> int | None:
    """Bytes of the weights stage `name` produces (or the checkpoint is)."""
    if name in seen:
        return None
    seen.add(name)
    model = plan.config["model"]
    if name == CHECKPOINT:
        given = model.get("name_or_path")
        if not given:
            return _built_bytes(model)
        local = Path(given).expanduser()
        folder = local if local.is_dir() else cached_snapshot(given, model.get("revision"))
        return _files_bytes(folder) if folder else None
    stage = plan.stage(name)
    policy = stage.spec.policy
    if policy is None or not STAGE_TYPES[stage.type].trains:
        return None
    if policy.stage:
        return _model_bytes(plan, policy.stage, seen)
    local = Path(policy.path).expanduser()
    folder = local if local.is_dir() else cached_snapshot(policy.path, policy.revision)
    return _files_bytes(folder) if folder else None


def stage_bytes(plan: Plan, stage: PlannedStage) -> int | None:
    """What `stage` may write: its model dir and the checkpoints it keeps."""
    weights = _model_bytes(plan, stage.name, set())
    if weights is None or stage.type == CHECKPOINT:
        return weights
    trainer = stage.spec.trainer
    kept = trainer.get("save_total_limit")
    steps, every = trainer.get("max_steps") or 0, trainer.get("save_steps") or 0
    if kept is None:
        kept = steps // every if steps > 0 and every >= 1 else 1
    per_checkpoint = 0 if stage.spec.peft else CHECKPOINT_FACTOR * weights  # LoRA checkpoints are small
    return weights + max(0, kept) * per_checkpoint


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:,.1f} GiB"


def space_warning(plan: Plan) -> str | None:
    """A warning when the stages that will run may write more than the stage store's disk has free
    (stages write into their store entries; run_dir holds links and summaries)."""
    sizes = {s.name: stage_bytes(plan, s) for s in plan.stages if not s.cached and not s.external}
    sizes = {name: size for name, size in sizes.items() if size}
    store = plan.config.get("store_dir") or plan.run_dir
    need, free = sum(sizes.values()), free_bytes(store)
    if free is None or need <= free:
        return None
    parts = ", ".join(f"{name} {_mib(size)}" for name, size in sizes.items())
    return (f"warning: the stage store {store} has {_mib(free)} free, and the stages about to run may write about "
            f"{_mib(need)} ({parts}; model dirs and kept checkpoints). Free space, lower "
            f"trainer.save_total_limit, or choose another store_dir; a stage that runs out fails and resumes later.")

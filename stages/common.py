"""What every stage process shares: its spec, device defaults, model I/O, progress and the manifest.

A stage is `python -m stages.<type> <stage.yaml>`; the orchestrator writes stage.yaml (see
workflows/plan.py for its keys). Heavy imports stay inside functions so `--help`-level use and
the orchestrator's imports of this package stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stages.distributed import adopt_srun_ranks, gathered_digest, merge_saved_adapter, partitioned, zero3_enabled
from workflows.gates import enforce as enforce_gate

MANIFEST = "manifest.json"


def load_spec(argv: list[str] | None = None) -> dict[str, Any]:
    """Read the stage spec named on the command line."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m stages.<type> <stage.yaml>  (written by `python -m workflows.run`)")
    with open(argv[0]) as f:
        spec = yaml.safe_load(f)
    adopt_srun_ranks(spec)  # runner=srun: this process's rank comes from its Slurm task id
    enforce_gate(spec)  # a failed gate (workflows/gates.py) exits here, on any launcher
    from stages.tracking import attach

    attach(spec)  # rank 0 logs into this stage's MLflow run and ends it with a true status
    return spec


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def log(spec: dict[str, Any], message: str) -> None:
    if is_main_process():
        print(f"[{spec['name']}] {message}", flush=True)


def device_defaults() -> dict[str, Any]:
    """fp32 on CPU, bf16 where the GPU supports it; a user's explicit trainer values win."""
    import torch

    if not torch.cuda.is_available():
        return {"use_cpu": True, "bf16": False, "fp16": False}
    if torch.cuda.is_bf16_supported():
        return {"bf16": True, "fp16": False}
    return {"fp16": True, "bf16": False}


def trl_args(config_cls: type, spec: dict[str, Any], **stage_defaults: Any) -> Any:
    """Build a TRL config from the stage's `trainer` mapping (TRL's own field names).

    Precedence: posttrain-managed keys > the user's `trainer` values > stage defaults > device defaults.
    """
    stage_dir = Path(spec["stage_dir"])
    kwargs: dict[str, Any] = {**device_defaults(), "disable_tqdm": True, "save_only_model": False}
    kwargs.update(stage_defaults)
    kwargs.update(spec.get("trainer") or {})
    kwargs["output_dir"] = str(stage_dir / "checkpoints")
    kwargs.setdefault("run_name", spec["name"])
    kwargs.setdefault("seed", spec["seed"])
    from stages.tracking import report_to

    kwargs.setdefault("report_to", report_to(spec))  # rank 0 opens the stage's MLflow run first
    if spec.get("deepspeed"):
        from stages.distributed import init_deepspeed

        init_deepspeed(spec)  # before the config: HfDeepSpeedConfig and zero.Init read the world size
        path = stage_dir / "deepspeed.json"
        path.write_text(json.dumps(spec["deepspeed"], indent=2))
        kwargs["deepspeed"] = str(path)
    return config_cls(**kwargs)


def load_tokenizer(spec: dict[str, Any]) -> Any:
    """The policy's tokenizer, with the configured chat template if one is given."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"], revision=spec.get("revision"))
    if spec.get("chat_template"):
        tokenizer.chat_template = Path(spec["chat_template"]).read_text()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, spec: dict[str, Any], revision: str | None = None) -> Any:
    """A causal LM from a local dir or hub id, in the dtype training will use."""
    import torch
    from transformers import AutoModelForCausalLM

    trainer = spec.get("trainer") or {}
    dtype = torch.float32 if not torch.cuda.is_available() else torch.bfloat16
    if trainer.get("bf16") is False and trainer.get("fp16") is not True:
        dtype = torch.float32
    return AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype)


def lora_config(peft: dict[str, Any] | None) -> Any:
    if not peft:
        return None
    from peft import LoraConfig

    keys = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_dora")
    return LoraConfig(task_type="CAUSAL_LM", **{k: peft[k] for k in keys if k in peft})


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


def last_checkpoint(spec: dict[str, Any]) -> str | None:
    """The newest `checkpoint-N` of an interrupted run of this stage, to resume from."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(spec["stage_dir"]) / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def attach_progress(trainer: Any, spec: dict[str, Any]) -> None:
    """Replace the Trainer's dict printer by one compact line per logging step:
    `[sft] step 20/300  loss 1.23  12s`."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            keys = ("loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "kl", "learning_rate")
            parts = [f"{k} {logs[k]:.4g}" for k in keys if isinstance(logs.get(k), (int, float))]
            elapsed = time.time() - getattr(self, "start", time.time())
            print(f"[{spec['name']}] step {state.global_step}/{state.max_steps}  {'  '.join(parts)}  {elapsed:.0f}s",
                  flush=True)

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Progress())


def final_metrics(trainer: Any, train_output: Any, eval_dataset: Any) -> dict[str, float]:
    """Last logged value of every training metric, plus a final evaluation when there is eval data."""
    metrics: dict[str, float] = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                metrics[key] = float(value)
    metrics.update({k: float(v) for k, v in train_output.metrics.items() if isinstance(v, (int, float))})
    if eval_dataset is not None:
        metrics.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    metrics["global_step"] = float(trainer.state.global_step)
    return metrics


def save_model(trainer: Any, tokenizer: Any, spec: dict[str, Any]) -> str:
    """Save a plain HF model dir (weights, config, tokenizer, chat template) for the next stage.

    A LoRA adapter is saved unmerged in <stage>/adapter and merged into <stage>/model, so every
    downstream stage receives a full model whatever the upstream trained.
    """
    model_dir = spec["model_dir"]
    model = trainer.model
    if spec.get("peft"):
        trainer.save_model(os.path.join(spec["stage_dir"], "adapter"))
        if spec["peft"].get("merge", True) and is_main_process():
            if zero3_enabled():  # this rank holds shards only: merge the gathered, saved adapter instead
                merge_saved_adapter(spec, os.path.join(spec["stage_dir"], "adapter"), model_dir)
            else:
                model = trainer.accelerator.unwrap_model(model).merge_and_unload()
                model.save_pretrained(model_dir)
    else:
        trainer.save_model(model_dir)  # gathers ZeRO-3 shards into full weights
    if is_main_process():
        tokenizer.save_pretrained(model_dir)
    trainer.accelerator.wait_for_everyone()
    return model_dir


def write_manifest(spec: dict[str, Any], metrics: dict[str, Any], **extra: Any) -> None:
    """Mark the stage complete: written last and atomically, so a folder without it is never 'done'."""
    if not is_main_process():
        return
    stage_dir = Path(spec["stage_dir"])
    model_dir = Path(spec["model_dir"])
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file()) if model_dir.is_dir() else []
    manifest = {
        "name": spec["name"],
        "type": spec["type"],
        "fingerprint": spec.get("fingerprint"),
        "model_dir": str(model_dir),
        "inputs": {
            "policy_init": (spec.get("policy") or {}).get("path"),
            "reference_model": (spec.get("reference") or {}).get("path"),
            "datasets": [s["path"] for s in (spec.get("data") or {}).get("sources", [])],
        },
        "files": files,
        "metrics": metrics,
        "finished_at": time.time(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),  # processes that trained it
        **extra,
    }
    tmp = stage_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, stage_dir / MANIFEST)

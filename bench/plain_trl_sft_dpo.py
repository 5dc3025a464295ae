"""The `sft_dpo` pipeline's work written as plain TRL scripts, chained by hand like a user would:

    python -m bench.plain_trl_sft_dpo build OUT/checkpoint
    python -m bench.plain_trl_sft_dpo sft OUT/checkpoint OUT/sft [--set max_steps=20 ...]
    python -m bench.plain_trl_sft_dpo dpo OUT/sft OUT/dpo [--set max_steps=10 ...]

One process per script, run one after another: that is how people chain TRL scripts, so it is
the honest baseline for `python -m workflows.run +pipeline=sft_dpo` (which also starts one
process per stage). Same model (conf/model/tiny.yaml built with the shipped tokenizer), same data
(data/demo/), same trainer settings (the `trainer` mapping of conf/stage/{sft,dpo}.yaml, read as
plain YAML so the two never drift apart) and the same device defaults as the stages; none of
posttrain's validation, fingerprints, manifests or progress lines. Each script ends like the
stage does: a final evaluation on the eval split, the model saved for the next script.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from collections.abc import Callable
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "demo" / "tiny_tokenizer"
DATA = ROOT / "data" / "demo"
SEED = 42


def trainer_settings(stage: str, overrides: list[str]) -> dict[str, Any]:
    """conf/stage/<stage>.yaml's `trainer`, with `key=value` overrides (values parsed as YAML)."""
    settings = dict(yaml.safe_load((ROOT / "conf" / "stage" / f"{stage}.yaml").read_text())["trainer"])
    for item in overrides:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    return settings


def device_settings() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"use_cpu": True, "bf16": False, "fp16": False}
    return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}


def build(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    model_config = yaml.safe_load((ROOT / "conf" / "model" / "tiny.yaml").read_text())["config"]
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **model_config)
    torch.manual_seed(SEED)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def load(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype), tokenizer


def finish(trainer: Any, tokenizer: Any, out: Path) -> None:
    output = trainer.train()
    metrics = {**output.metrics, **trainer.evaluate(), "global_step": trainer.state.global_step}
    trainer.save_model(out)
    tokenizer.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics))


def sft(model_dir: Path, out: Path, overrides: list[str]) -> None:
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    files = {"train": str(DATA / "sft.jsonl"), "test": str(DATA / "sft_eval.jsonl")}
    data = load_dataset("json", data_files=files).select_columns(["messages"])
    args = SFTConfig(output_dir=str(out / "checkpoints"), run_name="sft", seed=SEED, report_to="none",
                     disable_tqdm=True, **device_settings(), **trainer_settings("sft", overrides))
    model, tokenizer = load(model_dir)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"],
                         processing_class=tokenizer)
    finish(trainer, tokenizer, out)


def dpo(model_dir: Path, out: Path, overrides: list[str]) -> None:
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    files = {"train": str(DATA / "prefs.jsonl"), "test": str(DATA / "prefs_eval.jsonl")}
    data = load_dataset("json", data_files=files).select_columns(["prompt", "chosen", "rejected"])
    args = DPOConfig(output_dir=str(out / "checkpoints"), run_name="dpo", seed=SEED, report_to="none",
                     disable_tqdm=True, **device_settings(), **trainer_settings("dpo", overrides))
    model, tokenizer = load(model_dir)  # the frozen reference: TRL loads the same dir again
    trainer = DPOTrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"],
                         processing_class=tokenizer)
    finish(trainer, tokenizer, out)


def step_main(prog: str, doc: str, first: tuple[str, Callable[[Path], None]],
              steps: dict[str, Callable[[Path, Path, list[str]], None]], argv: list[str] | None = None) -> None:
    """`<first> OUT`, then `<step> MODEL_DIR OUT [--set KEY=VALUE]...`: one process per step, as a user
    chaining TRL scripts by hand runs them."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser(first[0]).add_argument("out", type=Path)
    for step in steps:
        p = sub.add_parser(step)
        p.add_argument("model_dir", type=Path)
        p.add_argument("out", type=Path)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a trainer setting")
    args = parser.parse_args(argv)
    if args.step == first[0]:
        first[1](args.out)
    else:
        steps[args.step](args.model_dir, args.out, args.set)


def main(argv: list[str] | None = None) -> None:
    step_main("python -m bench.plain_trl_sft_dpo", __doc__, ("build", build), {"sft": sft, "dpo": dpo}, argv)


if __name__ == "__main__":
    main()

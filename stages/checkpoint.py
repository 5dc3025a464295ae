"""Make the pipeline's starting checkpoint: `python -m stages.checkpoint <stage.yaml>`.

- `model.gguf` set: the GGUF file converted once into a plain HF model dir (stages/lib/gguf.py):
  weights dequantized to float32 as safetensors, config, tokenizer, chat template.
- `model.name_or_path` null (the embedded tiny model): a randomly initialised model of
  `model.architecture` with the tokenizer from `model.tokenizer`, saved in the HF layout.
A real pretrained model given as a hub id or dir needs no stage: the planner hands its path on.
"""

from __future__ import annotations

import time
from pathlib import Path

from posttrain.spec import StageSpec
from stages.lib.common import load_spec, log, write_manifest
from stages.lib.models import model_digest


def convert_gguf(spec: StageSpec) -> None:
    """The GGUF file as a HF model dir; its tokenizer also fills the planner's cache (posttrain/gguf.py)."""
    from posttrain.gguf import tokenizer_dir
    from stages.lib import gguf

    source = (spec.model or {})["gguf"]
    log(spec, f"converting {source['path']} (sha256 {source['sha256'][:12]}...)")
    began = time.time()
    tokenizer = gguf.load_tokenizer(source["path"])
    model = gguf.load_model(source["path"])
    if spec.chat_template:
        tokenizer.chat_template = Path(spec.chat_template).read_text()
    n_params = sum(p.numel() for p in model.parameters())
    log(spec, f"loaded {type(model).__name__} with {n_params / 1e6:.1f}M parameters (dequantized to float32) "
              f"in {time.time() - began:.0f}s")
    model.save_pretrained(spec.model_dir)
    tokenizer.save_pretrained(spec.model_dir)
    if not (tokenizer_dir(source["sha256"]) / "tokenizer.json").is_file():
        gguf.save_tokenizer(tokenizer, tokenizer_dir(source["sha256"]))
    write_manifest(spec, {"parameters": float(n_params), "convert_seconds": round(time.time() - began, 1)},
                   weights_digest=model_digest(model), gguf={"path": source["path"], "sha256": source["sha256"]})


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    if (spec.model or {}).get("gguf"):
        convert_gguf(spec)
        return
    import torch
    import transformers
    from transformers import AutoTokenizer

    model_cfg = spec.model or {}
    tokenizer = AutoTokenizer.from_pretrained(model_cfg["tokenizer"])
    if model_cfg.get("chat_template"):
        tokenizer.chat_template = Path(model_cfg["chat_template"]).read_text()
    model_cls = getattr(transformers, model_cfg["architecture"])
    config = model_cls.config_class(
        **{
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **model_cfg["config"],
        }
    )
    torch.manual_seed(spec.seed)
    model = model_cls(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(spec, f"built {model_cfg['architecture']} with {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}")
    model.save_pretrained(spec.model_dir)
    tokenizer.save_pretrained(spec.model_dir)
    write_manifest(spec, {"parameters": float(n_params)}, weights_digest=model_digest(model))


if __name__ == "__main__":
    main()

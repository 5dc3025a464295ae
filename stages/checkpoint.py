"""Build the pipeline's starting checkpoint from config: `python -m stages.checkpoint <stage.yaml>`.

Used when `model.name_or_path` is null (the embedded tiny model): a randomly initialised model of
`model.architecture` with the tokenizer from `model.tokenizer`, saved in the HF layout. A real
pretrained model (hub id or dir) needs no stage: the planner hands its path to the next stage.
"""

from __future__ import annotations

from pathlib import Path

from stages.lib.common import load_spec, log, write_manifest
from stages.lib.models import model_digest


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
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

"""Supervised fine-tuning with TRL's SFTTrainer: `python -m stages.sft <stage.yaml>`.

Loss is masked to the assistant turns (`assistant_only_loss`, needs `{% generation %}` markers in
the chat template) or to the completion (prompt/completion data). Saves a full HF model dir that
the next stage starts from.
"""

from __future__ import annotations

from typing import Any

from stages.common import (
    final_metrics, last_checkpoint, load_model, load_spec, load_tokenizer, log, lora_config, model_digest,
    attach_progress, save_model, trl_args, write_manifest,
)
from stages.data import load_datasets


def build_config(spec: dict[str, Any]) -> Any:
    from trl import SFTConfig

    defaults: dict[str, Any] = {}
    if spec["data"]["format"] != "messages":
        defaults["assistant_only_loss"] = False  # only conversations have assistant turns
    return trl_args(SFTConfig, spec, **defaults)


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    from trl import SFTTrainer

    args = build_config(spec)  # before the model: ZeRO-3 must be configured when weights load
    tokenizer = load_tokenizer(spec)
    model = load_model(spec["policy"]["path"], spec, spec.get("revision"))
    initial_digest = model_digest(model)
    train, evaluation = load_datasets(spec["data"])
    log(spec, f"{len(train)} training rows from {spec['policy']['path']}")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
        peft_config=lora_config(spec["peft"]),
    )
    attach_progress(trainer, spec)
    resume = last_checkpoint(spec)
    if resume:
        log(spec, f"resuming from {resume}")
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = final_metrics(trainer, output, evaluation)
    save_model(trainer, tokenizer, spec)
    write_manifest(spec, metrics, initial_weights_digest=initial_digest, resumed_from=resume)


if __name__ == "__main__":
    main()

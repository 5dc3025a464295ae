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
from stages.data import load_stage_data
from stages.interrupt import save_on_signal


def build_config(spec: dict[str, Any], conversational: bool = True) -> Any:
    from trl import SFTConfig

    args = trl_args(SFTConfig, spec)
    if not conversational:
        args.assistant_only_loss = False  # plain strings have no assistant turns: loss on the completion/text
    return args


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    from trl import SFTTrainer

    data = load_stage_data(spec)  # checked, converted and mixed as planned (stages/data.py)
    args = build_config(spec, data.conversational)  # before the model: ZeRO-3 is configured as weights load
    tokenizer = load_tokenizer(spec)
    model = load_model(spec["policy"]["path"], spec, spec.get("revision"))
    initial_digest = model_digest(model)
    train, evaluation = data.train, data.evaluation
    log(spec, f"{len(train)} training rows from {spec['policy']['path']}")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
        peft_config=lora_config(spec["peft"]),
    )
    attach_progress(trainer, spec)
    save_on_signal(trainer, spec)  # SIGTERM/USR1: checkpoint now, exit, resume next run
    resume = last_checkpoint(spec)
    if resume:
        log(spec, f"resuming from {resume}")
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = {**final_metrics(trainer, output, evaluation), **data.metrics}
    save_model(trainer, tokenizer, spec)
    write_manifest(spec, metrics, initial_weights_digest=initial_digest, resumed_from=resume,
                   data_fingerprints=data.fingerprints)


if __name__ == "__main__":
    main()

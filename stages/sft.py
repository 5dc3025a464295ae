"""Supervised fine-tuning with TRL's SFTTrainer: `python -m stages.sft <stage.yaml>`.

Loss is masked to the assistant turns (`assistant_only_loss` with `{% generation %}` markers in
the chat template, or a template TRL has a training version of), to each conversation's last
assistant turn (`assistant_only_loss` with any other template: posttrain/data/check.py
`last_turn_loss`), or to the completion (prompt/completion data). Saves a full HF model dir that
the next stage starts from.
"""

from __future__ import annotations

from typing import Any

from posttrain.spec import StageSpec
from stages.lib.common import load_spec, log, trl_args
from stages.lib.data import load_stage_data
from stages.lib.models import load_model, load_tokenizer, lora_config, model_digest
from stages.lib.training import train_and_finish


def build_config(spec: StageSpec, conversational: bool = True, last_turn: bool = False) -> Any:
    from trl import SFTConfig

    args = trl_args(SFTConfig, spec)
    if last_turn:  # prompt/completion rows: TRL's completion-only loss masks the prompt
        args.assistant_only_loss = False
    if not conversational:
        args.assistant_only_loss = False  # plain strings have no assistant turns: loss on the completion/text
    return args


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    from trl import SFTTrainer

    assert spec.policy is not None
    data = load_stage_data(spec)  # checked, converted and mixed as planned
    args = build_config(spec, data.conversational, data.last_turn)  # before the model: ZeRO-3 is configured as weights load
    tokenizer = load_tokenizer(spec.policy, spec)
    model = load_model(spec.policy, spec)
    initial_digest = model_digest(model)
    log(spec, f"{len(data.train)} training rows from {spec.policy.path}")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.evaluation, processing_class=tokenizer,
        peft_config=lora_config(spec.peft),
    )
    train_and_finish(trainer, tokenizer, spec, data, initial_digest)


if __name__ == "__main__":
    main()

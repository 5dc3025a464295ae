"""A reward model with TRL's RewardTrainer: `python -m stages.reward <stage.yaml>`.

The policy's weights (an SFT model, usually) get a one-output score head and learn, on preference
pairs, to score prompt + chosen above prompt + rejected (Bradley-Terry). Saved as a plain
sequence-classification model dir that grpo/rloo stages name in their rewards; `eval_accuracy` is
how often it ranks the held-out chosen response first. `trainer` takes any RewardConfig field.
"""

from __future__ import annotations

from typing import Any

from posttrain.spec import StageSpec
from stages.lib.common import load_spec, log, trl_args
from stages.lib.data import load_stage_data
from stages.lib.models import load_model, load_tokenizer, lora_config, model_digest
from stages.lib.training import train_and_finish


def build_config(spec: StageSpec) -> Any:
    from trl import RewardConfig

    return trl_args(RewardConfig, spec)


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    from transformers import set_seed
    from trl import RewardTrainer

    assert spec.policy is not None
    data = load_stage_data(spec)
    args = build_config(spec)  # before the model: ZeRO-3 is configured as weights load
    tokenizer = load_tokenizer(spec.policy, spec)
    set_seed(spec.seed)  # the new score head is drawn at random
    model = load_model(spec.policy, spec, scorer=True)
    initial_digest = model_digest(model)
    log(spec, f"{len(data.train)} preference pairs; scorer from {spec.policy.path}")
    trainer = RewardTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.evaluation,
                            processing_class=tokenizer, peft_config=lora_config(spec.peft, task_type="SEQ_CLS"))
    train_and_finish(trainer, tokenizer, spec, data, initial_digest)


if __name__ == "__main__":
    main()

"""Plan-time checks of how stages start on any launcher: DeepSpeed settings against the trainer's."""

from __future__ import annotations

from posttrain.spec import StageSpec


def deepspeed_problems(name: str, spec: StageSpec) -> list[str]:
    """DeepSpeed's bf16/fp16 must be "auto" or agree with the trainer's, or the Trainer refuses to
    start; ZeRO-3 must gather full weights on save, or the next stage has nothing to load."""
    deepspeed, trainer = spec.deepspeed or {}, spec.trainer
    problems = []
    zero = deepspeed.get("zero_optimization") or {}
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        problems.append(f"stages.{name}.deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save: "
                        f"must be true under ZeRO-3, or the saved model holds no weights for the next stage")
    for precision in ("bf16", "fp16"):
        enabled = (deepspeed.get(precision) or {}).get("enabled", "auto")
        if enabled != "auto" and precision in trainer and bool(enabled) != bool(trainer[precision]):
            problems.append(f"stages.{name}.deepspeed.{precision}.enabled: {enabled} disagrees with "
                            f"stages.{name}.trainer.{precision}={trainer[precision]}; set it to auto")
    return problems

"""The shared body of the DPO and KTO stages: a policy trained against a frozen reference model."""

from __future__ import annotations

from typing import Any

from posttrain.spec import StageSpec
from stages.lib import ref_cache
from stages.lib.common import log
from stages.lib.data import load_stage_data
from stages.lib.distributed import file_backed, world_size
from stages.lib.models import load_model, load_tokenizer, lora_config, model_digest
from stages.lib.training import train_and_finish


def load_reference(spec: StageSpec) -> tuple[Any, str]:
    """The reference model, or None when the trainer derives it from the policy itself.

    With LoRA the reference is the policy with its adapter disabled (no second copy in memory);
    when the reference is the policy's starting model TRL loads that same directory itself.
    Returns (model or None, a description for the log and manifest).
    """
    assert spec.reference is not None and spec.policy is not None
    reference_path = spec.reference.path
    if spec.peft and reference_path == spec.policy.path:
        return None, f"{reference_path} (policy with the LoRA adapter disabled)"
    if reference_path == spec.policy.path:
        return None, f"{reference_path} (loaded by TRL from the policy's starting dir)"
    return load_model(spec.reference, spec), reference_path


def run(spec: StageSpec, trainer_cls: type, args: Any) -> None:
    """Load policy, reference and data; train; save; write the manifest."""
    assert spec.policy is not None
    data = load_stage_data(spec)  # checked first; preference pairs become unpaired rows for KTO
    tokenizer = load_tokenizer(spec.policy, spec)
    model = load_model(spec.policy, spec)
    initial_digest = model_digest(model)
    reference, reference_note = load_reference(spec)
    train, evaluation = data.train, data.evaluation
    log(spec, f"{len(train)} training rows; policy {spec.policy.path}; reference {reference_note}")
    if args.precompute_ref_log_probs:  # reused across runs and stages: stages/lib/ref_cache.py
        if world_size() > 1:  # TRL's precompute shares its result between ranks through files
            train, evaluation = file_backed(spec, args, train, evaluation)
        reference_digest = initial_digest if reference is None else model_digest(reference)
        trainer_cls = ref_cache.caching(trainer_cls, spec, reference_digest)
    trainer = trainer_cls(
        model=model, ref_model=reference, args=args, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer, peft_config=lora_config(spec.peft),
    )
    train_and_finish(trainer, tokenizer, spec, data, initial_digest, reference_note=reference_note,
                     ref_logps_cache=getattr(trainer, "ref_logps_cache", None))

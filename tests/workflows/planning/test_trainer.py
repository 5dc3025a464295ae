"""TRL fields against their real domains at plan time: choices from TRL's enums, metadata and help
(posttrain/trl_fields.json), ranges and cross-field rules from workflows/planning/trainer.py."""

from __future__ import annotations

import pytest

from posttrain.trl_fields import trl_fields
from workflows.config import compose
from workflows.planning import PlanError, build_plan
from workflows.planning.trainer import RULES, rule_problems

CONFIG_CLASSES = ("TrainingArguments", "SFTConfig", "DPOConfig", "KTOConfig")


def problems(*overrides: str) -> list[str]:
    with pytest.raises(PlanError) as err:
        build_plan(compose(["+pipeline=sft_dpo_kto", "tracking=none", *overrides]))
    return err.value.problems


def test_trainer_values_outside_their_domain_are_refused_at_plan_time():
    found = problems(
        "stages.dpo.trainer.learning_rate=-1e-3", "stages.sft.trainer.max_steps=0",
        "stages.kto.trainer.max_steps=-1", "stages.kto.trainer.num_train_epochs=0",
        "stages.sft.trainer.per_device_train_batch_size=0", "stages.dpo.trainer.optim=not_an_optimizer",
        "stages.dpo.trainer.lr_scheduler_type=cosin",
        "stages.sft.trainer.eval_strategy=sometimes", "stages.kto.trainer.loss_type=dpo",
        "stages.sft.trainer.logging_steps=2.5", "stages.dpo.trainer.loss_weights=[1.0]",
        "stages.sft.trainer.fp16=true", "stages.sft.trainer.bf16=true", "stages.dpo.trainer.beta=0",
        "stages.kto.trainer.per_device_train_batch_size=1", "stages.sft.trainer.seed=-1",
    )
    expected = [
        "stages.dpo.trainer.learning_rate: -0.001 is out of range: must be >= 0",
        "stages.sft.trainer.max_steps: 0 trains no step",
        "stages.kto.trainer.num_train_epochs: 0 with max_steps=-1 trains nothing",
        "stages.sft.trainer.per_device_train_batch_size: 0 is out of range: must be >= 1",
        "stages.dpo.trainer.optim: 'not_an_optimizer' is not one of TRL's DPOConfig.optim values (adamw_torch,",
        "stages.dpo.trainer.lr_scheduler_type: 'cosin' is not one of",
        "stages.sft.trainer.eval_strategy: 'sometimes' is not one of TRL's SFTConfig.eval_strategy values "
        "(no, steps, epoch)",
        "stages.kto.trainer.loss_type: 'dpo' is not one of TRL's KTOConfig.loss_type values (kto, apo_zero_unpaired)",
        "stages.sft.trainer.logging_steps: 2.5 must be a whole number",
        "stages.dpo.trainer.loss_weights: 1 weights for 2 loss types (sigmoid, sft)",
        "stages.sft.trainer.fp16: fp16 and bf16 are both true",
        "stages.dpo.trainer.beta: 0 is out of range: must be > 0",
        "stages.kto.trainer.per_device_train_batch_size: must be above 1 for loss_type kto",
        "stages.sft.trainer.seed: -1 is out of range",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)
    assert "did you mean 'cosine'?" in next(p for p in found if "lr_scheduler_type" in p)
    assert len(found) == len(expected), found  # nothing else, and nothing twice
    [item] = problems("stages.dpo.trainer.loss_type=[sigmoid,sigmoidd]")  # members of a list field
    assert item.startswith("stages.dpo.trainer.loss_type[1]: 'sigmoidd' is not one of TRL's DPOConfig.loss_type "
                           "values (sigmoid, hinge,"), item


def test_a_valid_combination_of_the_same_fields_plans():
    plan = build_plan(compose(["+pipeline=sft_dpo", "tracking=none", "stages.dpo.trainer.optim=adamw_torch",
                               "stages.dpo.trainer.loss_type=[sigmoid,sft]", "stages.dpo.trainer.loss_weights=[1.0,0.5]",
                               "stages.sft.trainer.eval_strategy=steps", "stages.sft.trainer.logging_steps=0.1",
                               "stages.dpo.trainer.lr_scheduler_type=cosine_with_min_lr"]))
    assert plan.stage("dpo").spec.trainer["loss_weights"] == [1.0, 0.5]


def test_rules_kept_by_hand_are_the_ones_the_real_classes_enforce(tmp_path):
    """Every rule said to be enforced by a TRL/transformers config class refuses its example, and so does the
    class itself; a TRL upgrade that drops or changes one of them fails here."""
    import transformers
    import trl

    checked = 0
    for rule in RULES:
        owner = rule.enforced_by.split()[0]
        if owner not in CONFIG_CLASSES:
            continue
        name = rule.classes[0] if rule.classes else "SFTConfig"
        cls = getattr(trl, name) if hasattr(trl, name) else getattr(transformers, owner)
        fields = trl_fields()["classes"][name]
        assert rule_problems("s", name, rule.example, fields, rules=(rule,)), rule.example
        with pytest.raises(ValueError):
            cls(output_dir=str(tmp_path), report_to="none", use_cpu=True, **rule.example)
        cls(output_dir=str(tmp_path), report_to="none", use_cpu=True)  # the defaults are fine
        checked += 1
    assert checked >= 6

"""posttrain's own keys against their domains at plan time: LoRA settings, seeds, gates an upstream metric
can never pass, mixtures with no rows."""

from __future__ import annotations

import pytest

from workflows.config import compose
from workflows.planning import PlanError, build_plan


def problems(*overrides: str, pipeline: str = "sft_dpo") -> list[str]:
    with pytest.raises(PlanError) as err:
        build_plan(compose([f"+pipeline={pipeline}", "tracking=none", *overrides]))
    return err.value.problems


def test_posttrain_values_outside_their_domain_are_refused_at_plan_time():
    found = problems(
        "peft=lora", "peft.r=0", "peft.lora_dropout=1.0", "peft.bias=al", "+peft@stages.dpo.peft=lora",
        "stages.dpo.peft.lora_alpha=-8", "seed=-1", "stages.sft.data.seed=4294967296",
        "stages.dpo.gate.metric=eval/sft/accuracy", "stages.dpo.gate.min=1.5",
        "stages.sft.data.sources.0.weight=nan",
    )
    expected = [
        "peft.r: 0 is out of range: must be >= 1 (peft refuses a rank below 1",
        "peft.lora_dropout: 1.0 is out of range: must be >= 0 and < 1",
        "peft.bias: 'al' is not one of none, all, lora_only; did you mean 'all'?",
        "stages.dpo.peft.lora_alpha: -8 is out of range: must be > 0",
        "seed: -1 is out of range: must be >= 0 and <= 4294967295",
        "stages.sft.data.seed: 4294967296 is out of range",
        "stages.dpo.gate.min: 1.5 can never be reached: eval/sft/accuracy is an accuracy, at most 1",
        "stages.sft.data.sources[0].weight: nan is not a finite share of 0 or more",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)


def test_gates_and_mixtures_that_can_never_hold(tmp_path):
    [msg] = problems("stages.dpo.gate.metric=sft/eval_rewards/accuracies", "stages.dpo.gate.max=-0.1")
    assert msg.startswith("stages.dpo.gate.max: -0.1 can never be reached: sft/eval_rewards/accuracies is an "
                          "accuracy, at least 0"), msg
    [msg] = problems("stages.dpo.gate.metric=sft/ppl", "stages.dpo.gate.max=0.5")
    assert "is a perplexity, at least 1" in msg
    found = problems("stages.sft.data.sources=[{path: ${asset:data/demo/sft.jsonl}, weight: 0}, "
                     "{path: ${asset:data/formats/messages.jsonl}, weight: 0}]")
    assert any(p.startswith("stages.sft.data.sources: every weight is 0, so the mixture has no rows") for p in found)
    plan = build_plan(compose(["+pipeline=sft_dpo", "tracking=none", "stages.dpo.gate.metric=sft/mean_token_accuracy",
                               "stages.dpo.gate.min=0.5", "peft=lora", "peft.r=1"]))
    assert plan.stage("dpo").spec.peft["r"] == 1

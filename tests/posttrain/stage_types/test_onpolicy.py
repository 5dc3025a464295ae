"""`onpolicy` stages at plan time: what they make (a dataset) is what their downstream stages may read."""

from __future__ import annotations

from tests.posttrain.stage_types.plans import problems


def test_inputs_must_come_from_stages_that_make_them():
    found = problems("stages.dpo.data.sources.0.stage=sft", pipeline="sft_dpo")
    assert any(f.startswith("stages.dpo.data.sources[0].stage: 'sft' is a sft stage; it writes model, not a dataset")
               for f in found)
    found = problems("stages.dpo.policy=onpolicy", pipeline="sft_onpolicy_dpo")
    assert any(f.startswith("stages.dpo.policy: 'onpolicy' is a onpolicy stage; it saves dataset") for f in found)

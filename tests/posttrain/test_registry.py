"""Every stage type in the registry names a module that exists."""

from __future__ import annotations

import importlib.util

from posttrain.registry import STAGE_TYPES


def test_every_stage_type_has_a_module():
    for name, stage_type in STAGE_TYPES.items():
        assert importlib.util.find_spec(stage_type.module), f"{name}: no module {stage_type.module}"


def test_every_output_kind_has_a_folder_and_settings_blocks_plan_themselves():
    from posttrain.artifacts import OUTPUT_DIRS

    for name, stage_type in STAGE_TYPES.items():
        assert stage_type.output in OUTPUT_DIRS, f"{name}: output '{stage_type.output}' has no folder"
        assert (stage_type.settings is None) == (stage_type.plan is None), name
    assert STAGE_TYPES["reward"].output == "reward_model" and STAGE_TYPES["grpo"].uses_reference

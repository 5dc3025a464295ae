"""Every stage type in the registry names a module that exists."""

from __future__ import annotations

import importlib.util

from posttrain.registry import STAGE_TYPES


def test_every_stage_type_has_a_module():
    for name, stage_type in STAGE_TYPES.items():
        assert importlib.util.find_spec(stage_type.module), f"{name}: no module {stage_type.module}"

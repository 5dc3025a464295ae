"""The registry's TRL field list matches the installed TRL (regenerate: python -m posttrain.trl_fields)."""

from __future__ import annotations

from posttrain.trl_fields import collect
from posttrain.registry import STAGE_TYPES
from posttrain.trl_fields import trl_fields


def test_trl_fields_file_matches_installed_trl():
    assert trl_fields() == collect(), "stale workflows/trl_fields.json: run python -m posttrain.trl_fields"


def test_every_stage_type_has_a_module():
    import importlib.util

    for name, stage_type in STAGE_TYPES.items():
        assert importlib.util.find_spec(stage_type.module), f"{name}: no module {stage_type.module}"

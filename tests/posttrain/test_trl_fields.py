"""The registry's TRL field list matches the installed TRL (regenerate: python -m posttrain.trl_fields)."""

from __future__ import annotations

from posttrain.trl_fields import collect, trl_fields


def test_trl_fields_file_matches_installed_trl():
    assert trl_fields() == collect(), "stale posttrain/trl_fields.json: run python -m posttrain.trl_fields"

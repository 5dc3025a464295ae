"""Plan a shipped pipeline with overrides, or collect the problems that stop it (no decide: nothing on disk is read)."""

from __future__ import annotations

import pytest

from posttrain.pipeline import Plan
from workflows.config import compose
from workflows.planning import PlanError, build_plan


def plan(*overrides: str, pipeline: str = "sft_dpo") -> Plan:
    return build_plan(compose([f"+pipeline={pipeline}", "tracking=none", *overrides]))


def problems(*overrides: str, pipeline: str = "sft_dpo") -> list[str]:
    with pytest.raises(PlanError) as err:
        plan(*overrides, pipeline=pipeline)
    return err.value.problems

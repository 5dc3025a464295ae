"""A fully cached re-run trains nothing, so it opens no MLflow store and makes no runs."""

from __future__ import annotations

import pytest

from posttrain.tracking import TrackingError
from posttrain.tracking.none import NullTracker
from workflows.config import compose
from workflows.planning import build_plan
from workflows.tracking import start


def plan_with_reasons(tmp_path, reasons: dict[str, str]):
    # an unreachable server: touching it would raise TrackingError from the preflight
    cfg = compose(["+pipeline=sft_dpo", f"run_dir={tmp_path}", "tracking.uri=http://127.0.0.1:9"])
    plan = build_plan(cfg)
    for stage in plan.stages:
        stage.reason = reasons.get(stage.name, "cached")
    return plan


def test_all_cached_needs_no_store(tmp_path):
    assert isinstance(start(plan_with_reasons(tmp_path, {})), NullTracker)


def test_one_stage_to_run_checks_the_store(tmp_path):
    with pytest.raises(TrackingError):
        start(plan_with_reasons(tmp_path, {"dpo": "config changed: stages.dpo.trainer.beta"}))

"""Metric names as the MLflow store takes them (posttrain/tracking/mlflow/store.py)."""

from __future__ import annotations

from posttrain.tracking.mlflow.store import metric_items


def test_stage_metric_names_on_the_parent():
    names = metric_items("dpo", {"rewards/accuracies": 0.5, "train_loss": 1, "note": "x", "flag": True})
    assert names == {"dpo.rewards/accuracies": 0.5, "dpo.train_loss": 1.0}

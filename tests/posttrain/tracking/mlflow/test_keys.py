"""Which numbers become MLflow charts and under which names (posttrain/tracking/mlflow/keys.py)."""

from __future__ import annotations

from posttrain.tracking.mlflow.keys import by_metric, per_model, split_constants


def test_data_counts_become_params_and_everything_else_stays():
    params, rest = split_constants({"data/rows": 640.0, "data/sources": 2.0, "train_loss": 1.5, "loss": 1.2})
    assert params == {"data/rows": "640.0", "data/sources": "2.0"}
    assert rest == {"train_loss": 1.5, "loss": 1.2}
    params, rest = split_constants({"data/rows": 10.0, "eval/seconds": 3.0}, prefix="sft")
    assert params == {"sft.data/rows": "10.0"} and rest == {"eval/seconds": 3.0}


def test_model_keys_turn_metric_first_and_split_per_model():
    metrics = {"sft/accuracy": 0.5, "sft_2/accuracy": 0.7, "sft/accuracy/copy": 0.25, "eval/seconds": 4.0}
    models = ["sft", "sft_2"]
    assert by_metric(metrics, models) == {"accuracy/sft": 0.5, "accuracy/sft_2": 0.7, "accuracy/copy/sft": 0.25,
                                          "eval/seconds": 4.0}  # `sft_2/...` is sft_2's, not sft's
    assert per_model(metrics, models) == {"sft": {"accuracy": 0.5, "accuracy/copy": 0.25}, "sft_2": {"accuracy": 0.7}}
    assert by_metric(metrics, []) == metrics and per_model(metrics, []) == {}

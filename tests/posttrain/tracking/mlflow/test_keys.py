"""Which numbers become MLflow charts and under which names (posttrain/tracking/mlflow/keys.py)."""

from __future__ import annotations

from posttrain.tracking.mlflow.keys import by_metric, eval_beside_training, per_model, split_constants
from posttrain.tracking.mlflow.stage import curves_first


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


def test_held_out_metrics_join_their_training_curves_section():
    logs = {"eval_rewards/accuracies": 0.6, "eval_logps/chosen": -3.0, "eval_rewards/correct/mean": 0.4,
            "eval_loss": 0.7, "rewards/accuracies": 0.5, "eval/seconds": 2.0}
    assert eval_beside_training(logs) == {"rewards/eval_accuracies": 0.6, "logps/eval_chosen": -3.0,
                                          "rewards/correct/eval_mean": 0.4, "eval_loss": 0.7,
                                          "rewards/accuracies": 0.5, "eval/seconds": 2.0}


def test_the_trainers_mlflow_callback_logs_the_regrouped_names():
    seen = []

    class MLflowCallback:  # HF's, as far as the adapter can tell (it matches the class name)
        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            seen.append(logs)

    class Other:
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(("other", logs))

    class Trainer:
        class callback_handler:
            callbacks = [MLflowCallback(), Other()]

    curves_first(Trainer())
    logs = {"eval_rewards/margins": 0.1, "loss": 1.0}
    for callback in Trainer.callback_handler.callbacks:
        callback.on_log(None, None, None, logs=logs, model="m")
    assert seen == [{"rewards/eval_margins": 0.1, "loss": 1.0}, ("other", logs)]
    assert logs == {"eval_rewards/margins": 0.1, "loss": 1.0}  # what the other callbacks get is untouched

"""Which of a stage's numbers become MLflow charts, and under which names: a stage run's
model-metrics tab should open on its training curves, and a comparison should put models side by side.

MLflow's run page draws one chart per metric, in sections named by the key's prefix before the last
`/`, named sections first and in alphabetical order (RunsChartsCardConfig.getBaseChartAndSectionConfigs).
So:
- the counts that describe a stage's data (`data/rows`, `data/eval_rows`, `data/invalid_rows`,
  `data/dropped_rows`, `data/over_length_rows`, `data/sources`: posttrain/data/prepare.py) hold one
  value per run. As metrics they were a `data` section of one-point charts above every curve; they
  are params (same names), beside the stage's config;
- a stage that compares models (its manifest names them under `models`: the eval stage) reports
  `<model>/<metric>` (what gates and summary.json use). Its run shows `<metric>/<model>`: a section
  per metric with one bar per model. Each model also gets a child run with the plain `<metric>`
  keys, so selecting them in the compare view lines the models up column by column;
- a trainer's held-out metrics in a section (`eval_rewards/accuracies`, `eval_logps/chosen`) go to
  the section of the training curve they match (`rewards/eval_accuracies`): evaluated once at the
  end, `eval_*` sections were one-point charts sorted before every curve. Unsectioned ones
  (`eval_loss`) keep their name, beside `loss`. summary.json and the parent run keep TRL's names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from posttrain.tracking.redact import mlflow_name, param_value

CONSTANT_PREFIXES = ("data/",)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def split_constants(metrics: dict[str, Any], prefix: str = "") -> tuple[dict[str, str], dict[str, Any]]:
    """(params, the rest): the data counts as MLflow params (`<prefix>.data/rows` with a prefix), the
    other entries unchanged."""
    params = {mlflow_name(f"{prefix}.{k}" if prefix else k): param_value(v) for k, v in metrics.items()
              if k.startswith(CONSTANT_PREFIXES) and _number(v)}
    rest = {k: v for k, v in metrics.items() if not k.startswith(CONSTANT_PREFIXES)}
    return params, rest


def eval_beside_training(logs: dict[str, Any]) -> dict[str, Any]:
    """`eval_rewards/accuracies` -> `rewards/eval_accuracies`; other keys unchanged."""
    out = {}
    for key, value in logs.items():
        section, _, name = key.rpartition("/")
        if section.startswith("eval_") and name:
            key = f"{section.removeprefix('eval_')}/eval_{name}"
        out[key] = value
    return out


def _model_of(key: str, models: list[str]) -> str | None:
    return next((m for m in models if key.startswith(f"{m}/")), None)


def by_metric(metrics: dict[str, Any], models: Iterable[str]) -> dict[str, Any]:
    """`sft/accuracy` -> `accuracy/sft` for each model compared; other keys unchanged."""
    names = sorted(models, key=len, reverse=True)  # `sft_2/x` belongs to sft_2, not sft
    out = {}
    for key, value in metrics.items():
        model = _model_of(key, names)
        out[f"{key[len(model) + 1:]}/{model}" if model else key] = value
    return out


def per_model(metrics: dict[str, Any], models: Iterable[str]) -> dict[str, dict[str, float]]:
    """{model: {metric: value}} from `<model>/<metric>` keys, for a child run per model."""
    names = sorted(models, key=len, reverse=True)
    out: dict[str, dict[str, float]] = {m: {} for m in models}
    for key, value in metrics.items():
        if (model := _model_of(key, names)) and _number(value):
            out[model][key[len(model) + 1:]] = float(value)
    return {m: values for m, values in out.items() if values}

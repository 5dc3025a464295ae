"""Plan-time side of gates: `stages.<name>.gate` checked and turned into the spec's GateSpec."""

from __future__ import annotations

import math
import os
from typing import Any

from posttrain.artifacts import MANIFEST
from posttrain.registry import STAGE_TYPES
from posttrain.spec import GateSpec


def metric_range(key: str) -> tuple[tuple[float, float], str] | None:
    """((lowest, highest), what it is) for a metric whose name says its range: accuracies (eval's
    `sft/accuracy`, `accuracy/<task>`, TRL's `rewards/accuracies`) are shares, perplexity is at least 1,
    a negative log-likelihood at least 0."""
    last = key.rsplit("/", 1)[-1]
    if "accurac" in key.lower() and not last.endswith(("margin", "margins")):
        return (0.0, 1.0), "an accuracy"
    if last in ("ppl", "perplexity"):
        return (1.0, math.inf), "a perplexity"
    if last == "nll":
        return (0.0, math.inf), "a negative log-likelihood"
    return None


def plan_gate(name: str, gate: dict[str, Any] | None, stages: dict[str, dict[str, Any]], run_dir: str
              ) -> tuple[GateSpec | None, list[str]]:
    """(the gate as the stage spec holds it, problems); its `stage` is an edge of the DAG.

    `stages` are the pipeline's enabled stage configs.
    """
    if not gate or (gate.get("metric") is None and gate.get("min") is None and gate.get("max") is None):
        return None, []
    where = f"stages.{name}.gate"
    metric = str(gate.get("metric") or "")
    upstream, _, key = metric.partition("/")
    problems = []
    if not upstream or not key:
        problems.append(f"{where}.metric: '{metric}' is not <stage>/<metric>, e.g. sft_eval/sft/accuracy")
    elif upstream == name:
        problems.append(f"{where}.metric: a stage cannot gate on its own metrics")
    elif upstream not in stages:
        problems.append(f"{where}.metric: '{upstream}' is not a stage of this pipeline "
                        f"(stages: {', '.join(sorted(stages))})")
    elif (stage_type := STAGE_TYPES.get(stages[upstream]["type"])) and stage_type.metric_problems:
        problems.extend(stage_type.metric_problems(where, upstream, key, stages[upstream]))
    low, high = gate.get("min"), gate.get("max")
    if low is None and high is None:
        problems.append(f"{where}: give `min`, `max` or both")
    elif any(b is not None and not math.isfinite(b) for b in (low, high)):
        problems.append(f"{where}: min and max must be finite numbers")
    elif low is not None and high is not None and low > high:
        problems.append(f"{where}: min {low} is above max {high}; no value can pass")
    elif key and (reach := metric_range(key)) is not None:
        (lowest, highest), what = reach
        if low is not None and low > highest:
            problems.append(f"{where}.min: {low} can never be reached: {metric} is {what}, at most {highest:g}")
        if high is not None and high < lowest:
            problems.append(f"{where}.max: {high} can never be reached: {metric} is {what}, at least {lowest:g}")
    if problems:
        return None, problems
    return GateSpec(metric, upstream, key, os.path.join(run_dir, upstream, MANIFEST), low, high), []

"""Plan-time side of gates: `stages.<name>.gate` checked and turned into the spec's GateSpec."""

from __future__ import annotations

import os
from typing import Any

from posttrain.artifacts import MANIFEST
from posttrain.registry import STAGE_TYPES
from posttrain.spec import GateSpec


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
    elif low is not None and high is not None and low > high:
        problems.append(f"{where}: min {low} is above max {high}; no value can pass")
    if problems:
        return None, problems
    return GateSpec(metric, upstream, key, os.path.join(run_dir, upstream, MANIFEST), low, high), []

"""Gates: a stage runs only when an upstream stage's metric is in bounds.

    stages.dpo.gate: {metric: sft_eval/sft/accuracy, min: 0.5}

The metric is `<stage>/<key>`: `<stage>` is an upstream stage (an edge of the DAG), `<key>` a metric
of its manifest. An eval stage's keys are `<model>/<metric>` (stages/eval.py), so
`sft_eval/sft/accuracy` is the task accuracy of model `sft` measured by stage `sft_eval`; any other
stage's manifest metrics work too (`sft/eval_loss`, `dpo/eval_rewards/accuracies`).

A failed gate marks the stage `gated` (its downstream stages are skipped, the run exits non-zero)
with the reason `gate sft_eval/sft/accuracy=0.31 < min 0.5`. The local launcher checks before it
starts the stage process (`stop`); the stage process checks again when it starts (`enforce`), so
a gate holds on any launcher: there it exits with GATED_EXIT_CODE and leaves <stage>/gated.json.
Stdlib only: the orchestrator and every stage process import this.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflows.plan import PlannedStage
    from workflows.report import StageResult

GATED_EXIT_CODE = 3  # a stage process that refused to start because its gate failed
GATED_FILE = "gated.json"  # <stage_dir>/gated.json: the verdict, for launchers that only see exit codes
# Metrics an eval stage reports per model (stages/eval.py); `accuracy/<task>` is per task type.
EVAL_METRICS = ("accuracy", "accuracy_seen", "accuracy_unseen", "pref_accuracy", "pref_margin", "reward_accuracy",
                "reward_margin", "nll", "ppl")


@dataclass
class Verdict:
    metric: str
    value: float | None  # None: the upstream stage did not report it
    min: float | None
    max: float | None
    passed: bool
    reason: str  # `gate sft_eval/sft/accuracy=0.31 < min 0.5`


def plan_gate(name: str, gate: dict[str, Any] | None, stages: dict[str, dict[str, Any]], run_dir: str
              ) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """(the gate as the stage spec holds it, the upstream stage it adds as an edge, problems).

    `stages` are the pipeline's enabled stage configs.
    """
    if not gate or (gate.get("metric") is None and gate.get("min") is None and gate.get("max") is None):
        return None, None, []
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
    elif stages[upstream]["type"] == "eval":
        problems.extend(_eval_key_problems(where, upstream, key, stages[upstream]))
    low, high = gate.get("min"), gate.get("max")
    if low is None and high is None:
        problems.append(f"{where}: give `min`, `max` or both")
    elif low is not None and high is not None and low > high:
        problems.append(f"{where}: min {low} is above max {high}; no value can pass")
    if problems:
        return None, None, problems
    spec = {"metric": metric, "stage": upstream, "key": key, "min": low, "max": high,
            "manifest": os.path.join(run_dir, upstream, "manifest.json")}
    return spec, upstream, []


def _eval_key_problems(where: str, upstream: str, key: str, eval_stage: dict[str, Any]) -> list[str]:
    from workflows.eval_plan import model_label

    labels = [model_label(m) for m in eval_stage.get("models") or []]
    model, _, metric = key.partition("/")
    if model not in labels:
        return [f"{where}.metric: stage '{upstream}' evaluates {', '.join(labels) or 'no models'}, not '{model}'"]
    if metric not in EVAL_METRICS and not metric.startswith("accuracy/"):
        return [f"{where}.metric: '{metric}' is not an eval metric ({', '.join(EVAL_METRICS)}, accuracy/<task>)"]
    return []


def judge(gate: dict[str, Any], metrics: dict[str, Any] | None) -> Verdict:
    """Whether `metrics` (the upstream stage's manifest metrics) pass `gate` (a spec's `gate`)."""
    low, high, metric = gate.get("min"), gate.get("max"), gate["metric"]
    value = (metrics or {}).get(gate["key"])
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        shown = ", ".join(sorted(metrics or {})[:12]) or "none"
        return Verdict(metric, None, low, high, False,
                       f"gate {metric}: stage '{gate['stage']}' did not report '{gate['key']}' (it reported: {shown})")
    value = float(value)
    if low is not None and value < low:
        return Verdict(metric, value, low, high, False, f"gate {metric}={value:.4g} < min {low:g}")
    if high is not None and value > high:
        return Verdict(metric, value, low, high, False, f"gate {metric}={value:.4g} > max {high:g}")
    bounds = " and ".join(b for b in (f">= min {low:g}" if low is not None else "",
                                       f"<= max {high:g}" if high is not None else "") if b)
    return Verdict(metric, value, low, high, True, f"gate {metric}={value:.4g} {bounds}")


def stop(stage: PlannedStage, results: dict[str, StageResult]) -> StageResult | None:
    """The `gated` result of a stage whose gate fails on its upstream's results, else None (it runs)."""
    from workflows.report import StageResult, stage_inputs

    gate = stage.spec.get("gate")
    if not gate:
        return None
    verdict = judge(gate, results[gate["stage"]].metrics)
    print(f"==> {stage.name}: {verdict.reason}" + ("" if verdict.passed else "; not starting it"), flush=True)
    if verdict.passed:
        return None
    return StageResult(stage.name, stage.type, "gated", stage.spec["model_dir"], stage_inputs(stage),
                       reason=verdict.reason, extra={"gate": asdict(verdict)})


def enforce(spec: dict[str, Any]) -> None:
    """In a stage process: exit with GATED_EXIT_CODE (after writing <stage_dir>/gated.json) when the
    stage's gate fails on the upstream manifest as it is on disk now."""
    gate = spec.get("gate")
    if not gate:
        return
    try:
        with open(gate["manifest"]) as f:
            metrics = json.load(f).get("metrics")
    except (OSError, ValueError):
        metrics = None
    verdict = judge(gate, metrics)
    if verdict.passed:
        if os.path.exists(path := os.path.join(spec["stage_dir"], GATED_FILE)):
            os.remove(path)  # gated by an earlier run
        return
    os.makedirs(spec["stage_dir"], exist_ok=True)
    with open(os.path.join(spec["stage_dir"], GATED_FILE), "w") as f:
        json.dump(asdict(verdict), f, indent=2)
    print(f"[{spec['name']}] {verdict.reason}; not running", flush=True)
    sys.exit(GATED_EXIT_CODE)

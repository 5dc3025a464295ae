"""What the user sees: the plan before anything runs, the summary (console and summary.json) after."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from workflows.commands import shell_join
from workflows.eval_report import eval_tables, extra_description, extra_inputs
from workflows.plan import Plan, PlannedStage

# Metrics worth a column in the console summary, in this order; everything is in summary.json.
HEADLINE_METRICS = ("train_loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "kl")


@dataclass
class StageResult:
    name: str
    type: str
    status: str  # completed | cached | given | failed | skipped | interrupted | submitted | cancelled
    output_dir: str
    inputs: dict[str, Any]
    wall_seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why it was skipped or failed
    extra: dict[str, Any] = field(default_factory=dict)  # launcher details (job id, log path)


def stage_inputs(stage: PlannedStage) -> dict[str, Any]:
    spec = stage.spec
    inputs: dict[str, Any] = {}
    if spec.get("policy"):
        inputs["policy_init"] = spec["policy"]["path"]
    if spec.get("reference"):
        inputs["reference_model"] = spec["reference"]["path"]
    if spec.get("data"):
        inputs["datasets"] = [s["path"] for s in spec["data"]["sources"]]
        inputs["eval_datasets"] = [s["path"] for s in spec["data"].get("eval_sources", [])]
    if spec["type"] == "checkpoint":
        inputs["model"] = spec["model"].get("name_or_path") or f"built from config ({spec['model']['architecture']})"
    inputs.update(extra_inputs(spec))  # models an eval measures, a generate stage's teacher
    return inputs


def _describe(stage: PlannedStage) -> str:
    spec = stage.spec
    if stage.type == "checkpoint":
        model = spec["model"]
        return f"model {model['name_or_path']}" if stage.external else f"build {model['architecture']} from config"
    parts = [f"policy={spec['policy']['ref']}"] if spec.get("policy") else []  # eval and generate have none
    if spec.get("reference"):
        parts.append(f"reference={spec['reference']['ref']}")
    if spec.get("data"):
        names = ", ".join(os.path.basename(s["path"]) or s["path"] for s in spec["data"]["sources"])
        parts.append(f"data={spec['data']['format']}:{names}")
    if spec.get("peft"):
        parts.append(f"peft={spec['peft']['method']}")
    if spec.get("deepspeed"):
        parts.append(f"zero{spec['deepspeed'].get('zero_optimization', {}).get('stage', '?')}")
    parts += extra_description(spec)  # models, teacher, gate (workflows/eval_report.py)
    return "  ".join(parts)


def render_plan(plan: Plan) -> str:
    lines = [f"Plan for pipeline '{plan.name}' in {plan.run_dir} ({len(plan.stages)} stages):"]
    width = max(len(s.name) for s in plan.stages)
    for i, stage in enumerate(plan.stages, 1):
        after = f"  after {', '.join(stage.upstream)}" if stage.upstream else ""
        lines.append(f"  {i}. {stage.name:<{width}}  [{stage.type}] {stage.reason} -- {_describe(stage)}{after}")
        if stage.command and stage.reason != "cached":  # a cached stage starts no process
            lines.append(f"     $ {shell_join(stage.command)}")
            lines.extend(f"     data: {note}" for note in stage.notes)
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_summary(results: list[StageResult], summary_path: str) -> str:
    keys = [k for k in HEADLINE_METRICS if any(k in r.metrics for r in results)]
    rows = [["stage", "type", "status", "seconds", *keys]]
    for r in results:
        rows.append([r.name, r.type, r.status, f"{r.wall_seconds:.1f}", *(_fmt(r.metrics.get(k, "")) for k in keys)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["", "Summary:"]
    for row in rows:
        out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in results:
        if r.reason and r.status not in ("completed", "cached", "given"):
            out.append(f"  {r.name}: {r.reason}")
        if r.metrics.get("data/dropped_rows"):  # on_invalid: drop (stages/data.py)
            out.append(f"  {r.name}: dropped {r.metrics['data/dropped_rows']:.0f} invalid data rows (see its stage.log)")
    out.extend(eval_tables(results))  # each eval stage's models side by side
    out.append(f"Written to {summary_path}")
    return "\n".join(out)


def write_summary(plan: Plan, results: list[StageResult]) -> str:
    path = os.path.join(plan.run_dir, "summary.json")
    os.makedirs(plan.run_dir, exist_ok=True)
    payload = {"pipeline": plan.name, "run_dir": plan.run_dir, "stages": [asdict(r) for r in results]}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)
    return path

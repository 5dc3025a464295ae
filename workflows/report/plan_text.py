"""The plan as printed before anything runs (and logged as plan.txt), and kept as <run_dir>/plan.json."""

from __future__ import annotations

import os
import shlex
import sys

from posttrain.artifacts import PLAN_FILE
from posttrain.jsonio import write_json
from posttrain.pipeline import Plan, PlannedStage, PlanRecord
from posttrain.registry import STAGE_TYPES
from posttrain.tracking.redact import redact
from workflows.launchers.runners import shell_join


def describe(stage: PlannedStage) -> str:
    """`policy=sft  reference=sft  data=preference:prefs.jsonl  peft=lora  gate ...`."""
    spec = stage.spec
    if spec.model is not None:  # the checkpoint
        return f"model {spec.model['name_or_path']}" if stage.external else f"build {spec.model['architecture']} from config"
    parts = [f"policy={spec.policy.ref}"] if spec.policy else []
    if spec.reference:
        parts.append(f"reference={spec.reference.ref}")
    if spec.data:
        names = ", ".join(os.path.basename(s.path or "") or str(s.path) for s in spec.data.sources)
        parts.append(f"data={spec.data.format}:{names}")
    if spec.peft:
        parts.append(f"peft={spec.peft['method']}")
    if spec.deepspeed:
        parts.append(f"zero{spec.deepspeed.get('zero_optimization', {}).get('stage', '?')}")
    stage_type = STAGE_TYPES[spec.type]
    if stage_type.describe:
        parts += stage_type.describe(spec)
    if gate := spec.gate:
        bounds = [f">= {gate.min:g}" if gate.min is not None else "", f"<= {gate.max:g}" if gate.max is not None else ""]
        parts.append(f"gate {gate.metric} {' '.join(b for b in bounds if b)}")
    return "  ".join(parts)


def render_plan(plan: Plan) -> str:
    n = len(plan.stages)
    lines = [f"Plan for pipeline '{plan.name}' in {plan.run_dir} ({n} stage{'s' * (n != 1)}):"]
    width = max(len(s.name) for s in plan.stages)
    for i, stage in enumerate(plan.stages, 1):
        after = f"  after {', '.join(stage.upstream)}" if stage.upstream else ""
        lines.append(f"  {i}. {stage.name:<{width}}  [{stage.type}] {stage.reason} -- {describe(stage)}{after}")
        if stage.command and not stage.cached:  # a cached stage starts no process
            lines.append(f"     $ {shell_join(stage.command)}")
            lines.extend(f"     data: {note}" for note in stage.notes)
    return "\n".join(lines)


def write_plan(plan: Plan) -> str:
    """<run_dir>/plan.json, before any stage starts: `posttrain status` reads it during and after the run."""
    command = shlex.join(redact(["python", "-m", "workflows.run", *sys.argv[1:]]))
    path = os.path.join(plan.run_dir, PLAN_FILE)
    write_json(path, PlanRecord.of(plan, command, render_plan(plan)).to_dict())
    return path

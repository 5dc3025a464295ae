"""How eval, generate and onpolicy stages and gates show in the plan, the summary and StageResult inputs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflows.report import StageResult

TABLE_FILE = "table.txt"  # <eval stage>/results/table.txt: the models side by side (stages/eval.py)


def _teacher(teacher: dict[str, Any] | None) -> str:
    if not teacher:
        return "?"
    return f"{teacher['model']}@{teacher['endpoint']}" if teacher.get("endpoint") else teacher.get("ref", "?")


def extra_inputs(spec: dict[str, Any]) -> dict[str, Any]:
    """Inputs of a StageResult beyond policy/reference/data: the models measured, the teacher."""
    out: dict[str, Any] = {}
    if spec.get("models"):
        out["models"] = {m["label"]: m["path"] for m in spec["models"]}
    generate = spec.get("generate") or {}
    if generate.get("teacher"):
        teacher = generate["teacher"]
        out["teacher"] = teacher.get("endpoint") and f"{teacher['endpoint']} ({teacher['model']})" or teacher["path"]
    return out


def extra_description(spec: dict[str, Any]) -> list[str]:
    """Plan-line parts: `models=checkpoint,sft,dpo`, `teacher=...`, `gate sft_eval/sft/accuracy >= 0.5`."""
    parts = []
    if spec.get("models"):
        parts.append("models=" + ",".join(m["label"] for m in spec["models"]))
        held_out = [os.path.basename(spec["eval"][k]) for k in ("tasks", "pairs") if spec["eval"].get(k)]
        parts.append("held-out=" + ",".join(held_out))
    if spec.get("generate"):
        parts.append(f"{spec['generate']['mode']} teacher={_teacher(spec['generate'].get('teacher'))}")
    if spec.get("onpolicy"):
        parts.append(f"k={spec['onpolicy']['samples_per_prompt']}")
    if gate := spec.get("gate"):
        bounds = [f">= {gate['min']:g}" if gate.get("min") is not None else "",
                  f"<= {gate['max']:g}" if gate.get("max") is not None else ""]
        parts.append(f"gate {gate['metric']} {' '.join(b for b in bounds if b)}")
    return parts


def eval_tables(results: list[StageResult]) -> list[str]:
    """The side-by-side table of every eval stage that finished, for the end of the summary."""
    out = []
    for result in results:
        path = os.path.join(result.output_dir, TABLE_FILE)
        if result.type == "eval" and result.status in ("completed", "cached") and os.path.isfile(path):
            with open(path) as f:
                out += ["", f"{result.name}:", *(f"  {line}".rstrip() for line in f.read().rstrip().splitlines())]
    return out

"""`onpolicy` stages: their settings and plan-time checks (the stage itself is stages/onpolicy.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from posttrain.stage_types import PlanContext, positive
from posttrain.verifiers import target_problems


@dataclass
class OnPolicySettings:
    """Preference pairs from the policy's own samples, scored by a verifier."""

    samples_per_prompt: int = 4  # k responses sampled per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 24
    batch_size: int = 64
    verifier: dict[str, Any] = field(default_factory=lambda: {"_target_": "demo.tasks.check_or_solve"})
    reference_fallback: bool = True  # no correct sample: `chosen` = the row's reference answer (else no pair)


def plan(ctx: PlanContext, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    where = f"stages.{name}.onpolicy"
    settings = dict(stage["onpolicy"])
    problems = positive(where, settings, ("samples_per_prompt", "max_new_tokens", "batch_size", "temperature"))
    if (settings.get("samples_per_prompt") or 0) < 2 and not settings.get("reference_fallback"):
        problems.append(f"{where}.samples_per_prompt: one sample cannot be both chosen and rejected; "
                        f"sample 2 or more, or set reference_fallback=true")
    problems += target_problems(f"{where}.verifier", settings.get("verifier"))
    for problem in problems:
        ctx.problem(problem)
    return {"settings": settings}


def describe(spec: Any) -> list[str]:
    return [f"k={spec.settings['samples_per_prompt']}"]

"""`generate` stages: their settings and plan-time checks (the stage itself is stages/generate.py)."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from posttrain.names import ENV_NAME
from posttrain.stage_types import PlanContext, positive
from posttrain.verifiers import target_problems

MODES = ("self_instruct", "distill")


@dataclass
class TeacherSettings:
    """A model that writes text: run locally with transformers, or behind an OpenAI-compatible endpoint."""

    model: str | None = None  # local: a stage name, `checkpoint`, a dir or hub id; endpoint: the served name
    endpoint: str | None = None  # base URL of an OpenAI-compatible API (http://host:8000/v1); null = local
    api_key_env: str | None = None  # NAME of the environment variable that holds the API key (never the key)
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 64  # local: prompts per generate() call; endpoint: requests in flight
    timeout: float = 60.0  # endpoint: seconds per request
    max_retries: int = 3  # endpoint: retries of a failed request (429, 5xx, connection), with backoff


@dataclass
class GenerateSettings:
    """Synthetic instruction data from seed tasks; the stage's `data` holds the seeds."""

    mode: str = "self_instruct"  # self_instruct: new instructions from seed examples | distill: answer the seeds
    num_instructions: int = 64  # self_instruct: new instructions to ask for
    examples_per_request: int = 4  # self_instruct: seed instructions shown in each request
    instructions_per_request: int = 8  # self_instruct: new instructions asked for in each request
    responses_per_prompt: int = 1  # distill: responses sampled per seed prompt
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    verifier: dict[str, Any] = field(default_factory=lambda: {"_target_": "demo.tasks.check_or_solve"})
    # A judge model instead of the program `verifier` (asked yes/no); used when it has a model or endpoint.
    judge: TeacherSettings = field(default_factory=lambda: TeacherSettings(temperature=0.0, max_new_tokens=4))
    dedup_threshold: float = 0.85  # character n-gram Jaccard of two instructions above which one is dropped
    ngram: int = 3


def teacher(ctx: PlanContext, name: str, where: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """A teacher or judge: an OpenAI-compatible endpoint, or a local model (an edge when it is a stage)."""
    settings = dict(settings)
    problems = positive(where, settings, ("max_new_tokens", "batch_size", "timeout"))
    if settings.get("max_retries") is not None and settings["max_retries"] < 0:
        problems.append(f"{where}.max_retries: must be 0 or more, got {settings['max_retries']}")
    if not 0 <= (settings.get("temperature") or 0):
        problems.append(f"{where}.temperature: must be 0 or more")
    key_env = settings.get("api_key_env")
    if settings.get("endpoint"):
        if not re.match(r"^https?://[^/\s]+", settings["endpoint"]):
            problems.append(f"{where}.endpoint: '{settings['endpoint']}' is not an http(s):// URL "
                            f"(an OpenAI-compatible base URL such as http://localhost:8000/v1)")
        if not settings.get("model"):
            problems.append(f"{where}.model: name the model the endpoint serves (the request's `model`)")
        if key_env is not None:
            env = {**os.environ, **(ctx.config["launcher"].get("env") or {})}
            if not ENV_NAME.match(key_env):
                problems.append(f"{where}.api_key_env: '{key_env}' is not an environment variable NAME "
                                f"(write the variable's name, never the key itself)")
            elif not env.get(key_env):
                problems.append(f"{where}.api_key_env: environment variable {key_env} is not set; export it "
                                f"before running (posttrain stores only its name)")
    else:
        if key_env is not None:
            problems.append(f"{where}.api_key_env: only an `endpoint` teacher takes an API key")
        if not settings.get("model"):
            problems.append(f"{where}: give `model` (a stage name, checkpoint, a dir or hub id) or an `endpoint`")
    for problem in problems:
        ctx.problem(problem)
    if problems:
        return None
    if settings.get("endpoint"):
        return {**settings, "endpoint": settings["endpoint"].rstrip("/")}
    model = ctx.model(name, where.removeprefix(f"stages.{name}.") + ".model", settings["model"])
    return {**settings, **asdict(model)} if model else None


def plan(ctx: PlanContext, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    where = f"stages.{name}.generate"
    settings = dict(stage["generate"])
    problems = []
    if settings.get("mode") not in MODES:
        problems.append(f"{where}.mode: '{settings.get('mode')}' is not one of {', '.join(MODES)}")
    problems += positive(where, settings, ("num_instructions", "examples_per_request", "instructions_per_request",
                                           "responses_per_prompt", "ngram"))
    if not 0 < (settings.get("dedup_threshold") or 0) <= 1:
        problems.append(f"{where}.dedup_threshold: must be in (0, 1], got {settings.get('dedup_threshold')}"
                        f" (1 drops exact duplicates only)")
    settings["teacher"] = teacher(ctx, name, f"{where}.teacher", settings["teacher"])
    judge = settings.get("judge") or {}
    if judge.get("model") or judge.get("endpoint"):
        settings["judge"] = teacher(ctx, name, f"{where}.judge", judge)
    else:
        settings["judge"] = None
        problems += target_problems(f"{where}.verifier", settings.get("verifier"))
    for problem in problems:
        ctx.problem(problem)
    return {"settings": settings}


def describe(spec: Any) -> list[str]:
    """Plan-line part: `self_instruct teacher=sft` (or the endpoint's model@url)."""
    teacher = spec.settings.get("teacher") or {}
    shown = f"{teacher['model']}@{teacher['endpoint']}" if teacher.get("endpoint") else teacher.get("ref", "?")
    return [f"{spec.settings['mode']} teacher={shown}"]

"""`grpo` and `rloo` stages: their rewards and plan-time checks (the stages are stages/grpo.py, stages/rloo.py).

Rewards are a weighted list; each entry is either a verifier (a `_target_` function, as the eval,
generate and onpolicy stages use: `fn(task, prompt, answer, output)` -> a truth value or a score)
or a reward model (a `reward` stage, or a sequence-classification model dir or hub id). The
trainer's reward is the weighted sum; TRL logs each function's curve as `rewards/<name>/mean`.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from posttrain.data.formats import check_row
from posttrain.refs import looks_like_path
from posttrain.stage_types import PlanContext, positive
from posttrain.stage_types.eval import rows_problems
from posttrain.verifiers import target_problems

REWARD_MODEL = "reward_model"  # the registry `output` a reward model input must come from
TRL_METRIC_NAMES = ("reward", "kl", "loss", "entropy")  # TRL's own metrics, logged next to rewards/<name>/...
TRL_BETA = {"grpo": 0.0, "rloo": 0.05}  # GRPOConfig's and RLOOConfig's default KL coefficient


@dataclass
class RewardEntry:
    """One term of the reward: a verifier or a reward model, times `weight`."""

    name: str | None = None  # its curve `rewards/<name>/mean`; null = the function's or the model's name
    verifier: dict[str, Any] | None = None  # {_target_: module.function, **kwargs}
    model: str | None = None  # a `reward` stage, or a sequence-classification model dir / hub id
    weight: float = 1.0
    needs_answer: bool = True  # verifier: refuse prompts without a reference answer (false: it solves them)


@dataclass
class RLSettings:
    """Online RL: the policy samples `num_generations` completions per prompt; the rewards score them."""

    rewards: list[RewardEntry] = field(default_factory=list)
    log_completions: int = 16  # sampled completions kept per logging step in <stage>/completions.jsonl (0: none)


def _default_name(entry: dict[str, Any]) -> str:
    if entry.get("verifier"):
        return str(entry["verifier"].get("_target_", "verifier")).rsplit(".", 1)[-1]
    return str(entry.get("model") or "reward").removeprefix("hf:").rstrip("/").rsplit("/", 1)[-1]


def _sequence_classifier_problem(where: str, path: str) -> str | None:
    """A local model dir that is not a sequence classifier (a causal LM cannot score a response)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None  # a hub id: the stage loads it
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return f"{where}: cannot read {config}"
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        return (f"{where}: {path} is a {', '.join(architectures) or 'model'}, not a reward model (a "
                f"*ForSequenceClassification with one label); train one with a `reward` stage")
    return None


def plan(ctx: PlanContext, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    kind = stage["type"]
    where = f"stages.{name}.{kind}"
    settings = dict(stage[kind])
    problems = positive(where, settings, ("log_completions",)) if settings.get("log_completions") else []
    rewards, names = [], set()
    if not settings.get("rewards"):
        problems.append(f"{where}.rewards: give at least one reward, e.g. "
                        f"[{{verifier: {{_target_: demo.tasks.check}}, weight: 1.0}}] or [{{model: rm}}]")
    for i, raw in enumerate(settings.get("rewards") or []):
        at = f"{where}.rewards[{i}]"
        entry = dict(raw)
        if bool(entry.get("verifier")) == bool(entry.get("model")):
            problems.append(f"{at}: give either `verifier` ({{_target_: module.function}}) or `model` "
                            f"(a reward stage), not {'both' if entry.get('model') else 'neither'}")
            continue
        entry["name"] = entry.get("name") or _default_name(entry)
        if entry["name"] in names or entry["name"] in TRL_METRIC_NAMES or "/" in entry["name"]:
            why = "is used twice" if entry["name"] in names else "clashes with TRL's own metric names"
            problems.append(f"{at}.name: '{entry['name']}' {why}; give each reward its own `name`")
        names.add(entry["name"])
        if not isinstance(entry.get("weight"), (int, float)) or isinstance(entry.get("weight"), bool):
            problems.append(f"{at}.weight: must be a number, got {entry.get('weight')!r}")
        if entry.get("verifier"):
            problems += target_problems(f"{at}.verifier", entry["verifier"])
        else:
            model = ctx.model(name, f"{kind}.rewards[{i}].model", entry["model"], output=REWARD_MODEL)
            if model is None:
                continue
            if model.stage is None and looks_like_path(entry["model"]):
                if problem := _sequence_classifier_problem(f"{at}.model", model.path):
                    problems.append(problem)
            entry["model"] = asdict(model)
        rewards.append(entry)
    trainer = stage.get("trainer") or {}
    if trainer.get("reward_weights") is not None:
        problems.append(f"stages.{name}.trainer.reward_weights: set each reward's weight in {where}.rewards[i].weight")
    if stage.get("reference") is not None and not trainer.get("beta", TRL_BETA.get(kind, 0.0)):
        problems.append(f"stages.{name}.reference: with trainer.beta=0 there is no KL term, so no reference; "
                        f"set beta > 0 or remove `reference`")
    peft = stage.get("peft") or ctx.config.get("peft") or {}
    if peft.get("method", "none") != "none" and stage.get("reference") not in (None, stage.get("policy")):
        problems.append(f"stages.{name}.reference: with LoRA the reference is the policy with its adapter disabled "
                        f"(its starting model); another reference needs a full fine-tune (peft=none)")
    if trainer.get("use_vllm") and importlib.util.find_spec("vllm") is None:
        problems.append(f"stages.{name}.trainer.use_vllm: vllm is not installed here (pip install vllm; it needs a "
                        f"GPU); or set use_vllm=false to generate with transformers")
    problems += _answer_problems(name, stage, rewards)
    for problem in problems:
        ctx.problem(problem)
    return {"settings": {**settings, "rewards": rewards}}


def _answer_problems(name: str, stage: dict[str, Any], rewards: list[dict[str, Any]]) -> list[str]:
    """Prompt rows without a reference answer, when a verifier compares with one (local files; the
    stage checks hub datasets and upstream outputs before it trains)."""
    needing = [r["name"] for r in rewards if r.get("verifier") and r.get("needs_answer", True)]
    data = stage.get("data") or {}
    if not needing:
        return []
    out = []
    for i, source in enumerate(data.get("sources") or []):
        fmt = source.get("format") or data.get("format")
        path = Path(str(source.get("path") or "")).expanduser()
        if fmt != "prompt" or source.get("stage") or not path.is_file():
            continue  # the other prompt formats always carry a reference (the last assistant turn, completion, chosen)

        def missing(row: Any) -> list[str]:
            if check_row(row, "prompt"):
                return []  # reported by the data check
            return [] if row.get("answer") is not None else [
                f"no 'answer', but reward{'s' * (len(needing) > 1)} {', '.join(needing)} compare with one; add "
                f"answers, or set needs_answer: false on a verifier that solves prompts itself"]
        out += rows_problems(f"stages.{name}.data.sources[{i}]", str(path), missing)
    return [p for p in out if "no 'answer'" in p]


def describe(spec: Any) -> list[str]:
    """Plan-line parts: `rewards=check:1,rm:0.5  generation=transformers`."""
    rewards = ",".join(f"{r['name']}:{r['weight']:g}" for r in spec.settings.get("rewards") or [])
    generation = "vllm" if spec.trainer.get("use_vllm") else "transformers"
    return [f"rewards={rewards}", f"generation={generation}"]

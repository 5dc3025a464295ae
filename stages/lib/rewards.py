"""The rewards of the RL stages (grpo, rloo): verifiers wrapped as TRL reward functions, reward models
loaded for TRL, and the prompts they score.

A verifier (posttrain/verifiers.py) is called once per completion with the row's prompt, reference
answer and task; its truth value (or score) is the reward, and a verifier that raises on a garbage
completion gives 0, never a crash. A reward model is a `reward` stage's sequence classifier; TRL
scores prompt + completion with it through its chat template.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from posttrain.spec import ModelRef, StageSpec
from posttrain.verifiers import load_verifier, prompt_and_reference, prompt_text, response_text, score

RewardFunc = Callable[..., list[float]]


def verifier_reward(name: str, config: dict[str, Any]) -> RewardFunc:
    """A TRL reward function (`prompts`, `completions` and the dataset's columns as lists) that runs
    the verifier `config` names on every completion; TRL names its curve `rewards/<name>/mean`."""
    verifier = load_verifier(config)

    def reward(prompts: list[Any], completions: list[Any], answer: list[str | None] | None = None,
               task: list[str | None] | None = None, **_: Any) -> list[float]:
        answers = answer or [None] * len(prompts)
        tasks = task or [None] * len(prompts)
        return [score(verifier, t, prompt_text(p), a, response_text(c))
                for p, c, a, t in zip(prompts, completions, answers, tasks)]

    reward.__name__ = name
    return reward


def reward_model(name: str, model: ModelRef, spec: StageSpec) -> tuple[Any, Any]:
    """(sequence classifier in eval mode, its tokenizer) of a reward-model entry.

    Raises:
        SystemExit: the model has more than one output (not a scalar reward model).
    """
    from stages.lib.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model, spec)
    scorer = load_model(model, spec, scorer=True)
    if scorer.config.num_labels != 1:
        raise SystemExit(f"[{spec.name}] reward model '{name}' ({model.path}) has {scorer.config.num_labels} outputs; "
                         f"a reward model has one (train one with a `reward` stage)")
    scorer.config._name_or_path = name  # TRL names a model's curve after it: rewards/<name>/mean
    scorer.eval()
    return scorer, tokenizer


def load_rewards(spec: StageSpec) -> tuple[list[Any], list[Any], list[float]]:
    """(reward functions and models, their tokenizers (None for functions), weights) in config order."""
    funcs, tokenizers, weights = [], [], []
    for entry in spec.settings["rewards"]:
        if entry.get("verifier"):
            funcs.append(verifier_reward(entry["name"], entry["verifier"]))
            tokenizers.append(None)
        else:
            scorer, tokenizer = reward_model(entry["name"], ModelRef(**entry["model"]), spec)
            funcs.append(scorer)
            tokenizers.append(tokenizer)
        weights.append(float(entry["weight"]))
    return funcs, tokenizers, weights


def prompt_rows(rows: Any) -> list[dict[str, Any]]:
    """The trainer's rows as TRL's prompt-only dataset: `prompt` (a conversation up to the reference
    turn, or a plain string as given), `answer` (the reference, or None) and `task` for the verifiers."""
    out = []
    for row in rows:
        prompt, answer = prompt_and_reference(row)
        plain = row.get("prompt")
        out.append({"prompt": plain if isinstance(plain, str) else prompt, "answer": answer, "task": row.get("task")})
    return out


def answer_problem(spec: StageSpec, rows: list[dict[str, Any]]) -> str | None:
    """Why the rows cannot be scored: prompts without a reference answer for a verifier that needs one
    (the planner checks local files; this catches hub datasets and upstream outputs)."""
    needing = [e["name"] for e in spec.settings["rewards"] if e.get("verifier") and e.get("needs_answer", True)]
    missing = sum(r["answer"] is None for r in rows)
    if not needing or not missing:
        return None
    return (f"[{spec.name}] {missing} of {len(rows)} prompts have no reference answer, but "
            f"{', '.join(needing)} compare{'s' * (len(needing) == 1)} with one; add answers, or set "
            f"needs_answer: false on a verifier that solves prompts itself")

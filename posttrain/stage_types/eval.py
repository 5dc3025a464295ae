"""`eval` stages: their settings and plan-time checks (the stage itself is stages/eval.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.data.files import BadRow, SourceError, iter_rows
from posttrain.data.formats import check_row, to_trainer_rows
from posttrain.data.tokens import TokenCounter
from posttrain.refs import model_label
from posttrain.stage_types import PlanContext, positive
from posttrain.verifiers import target_problems

SHOW_ROWS = 5  # bad rows listed per file
# Metrics an eval stage reports per model (stages/eval.py); `accuracy/<task>` is per task type.
METRICS = ("accuracy", "accuracy_seen", "accuracy_unseen", "pref_accuracy", "pref_margin", "reward_accuracy",
           "reward_margin", "nll", "ppl")


@dataclass
class EvalSettings:
    """What an `eval` stage measures for each of the stage's `models`."""

    tasks: str | None = None  # held-out prompts with checkable answers (JSONL: prompt, answer, task?, seen?)
    pairs: str | None = None  # held-out preference pairs (JSONL: prompt?, chosen, rejected)
    max_rows: int | None = None  # a seeded sample of this many rows of each file; null = all
    checker: dict[str, Any] = field(default_factory=lambda: {"_target_": "demo.tasks.check"})  # +kwargs
    # What of the output the checker sees: `none` = all of it (whitespace-stripped; exact answers),
    # `first_line` = its first non-empty line (a chatty model that explains after answering).
    extract: str = "none"
    # Greedy generation length per answer (generation stops at the end-of-turn token before it);
    # `auto` = the longest reference answer in the policy's tokens + AUTO_SLACK. (Any: int or "auto".)
    max_new_tokens: Any = 24
    batch_size: int = 64
    # Prompt + response tokens scored for preference accuracy and perplexity; `auto` = the longest
    # held-out prompt + answer (or pair) in the policy's tokens + AUTO_SLACK.
    max_length: Any = 256


EXTRACTS = ("none", "first_line")
AUTO_SLACK = 8  # tokens added to a measured length: the end-of-turn tokens and a few words of chatter


def plan(ctx: PlanContext, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    where = f"stages.{name}"
    settings = dict(stage["eval"])
    models = []
    for i, ref in enumerate(stage.get("models") or []):
        if (model := ctx.model(name, f"models[{i}]", ref)) is None:
            continue
        if same := next((m for m in models if m.label == model.label), None):
            why = "is listed twice" if same.ref == ref else f"has the same metric name as '{same.ref}'"
            ctx.problem(f"{where}.models[{i}]: '{ref}' {why} (metrics are named {model.label}/...)")
            continue
        models.append(model)
    if not stage.get("models"):
        ctx.problem(f"{where}.models: name the models to measure, e.g. [checkpoint, sft, dpo]")
    if stage.get("data") is not None:
        ctx.problem(f"{where}.data: eval stages read {where}.eval.tasks and .pairs, not `data`")
    if not settings.get("tasks") and not settings.get("pairs"):
        ctx.problem(f"{where}.eval: give `tasks` (prompts with checkable answers), `pairs` (preference pairs) or both")
    for key in ("tasks", "pairs"):
        settings[key] = _local_file(ctx, f"{where}.eval.{key}", settings.get(key))
    problems = []
    if settings["tasks"]:
        problems += rows_problems(f"{where}.eval.tasks", settings["tasks"], task_row_problems)
    if settings["pairs"]:
        problems += rows_problems(f"{where}.eval.pairs", settings["pairs"], lambda row: check_row(row, "preference"))
    if settings.get("extract") not in EXTRACTS:
        problems.append(f"{where}.eval.extract: '{settings.get('extract')}' is not one of {', '.join(EXTRACTS)}")
    problems += _auto_lengths(ctx, where, settings)
    problems += positive(f"{where}.eval", settings, ("max_rows", "max_new_tokens", "batch_size", "max_length"))
    problems += target_problems(f"{where}.eval.checker", settings.get("checker"))
    for problem in problems:
        ctx.problem(problem)
    return {"models": models, "settings": settings}


def _auto_lengths(ctx: PlanContext, where: str, settings: dict[str, Any]) -> list[str]:
    """Resolve `auto` generation and scoring lengths from the held-out rows, in the pipeline's tokens."""
    auto = [k for k in ("max_new_tokens", "max_length") if settings.get(k) == "auto"]
    bad = [k for k in ("max_new_tokens", "max_length") if isinstance(settings.get(k), str) and k not in auto]
    problems = [f"{where}.eval.{k}: give a number of tokens or auto, not '{settings[k]}'" for k in bad]
    if not auto or bad:
        return problems
    counter = TokenCounter.from_dir(ctx.tokenizer(), ctx.config["model"].get("chat_template")) \
        if ctx.tokenizer() else None
    if counter is None:
        return [f"{where}.eval.{k}: auto measures the held-out rows with the pipeline's tokenizer, which is not a "
                f"local folder with tokenizer.json; give a number" for k in auto]
    rows = [{"prompt": _messages(r["prompt"]), "completion": [{"role": "assistant", "content": str(r["answer"])}]}
            for r in _rows(settings.get("tasks"), task_row_problems)]
    pairs = [to_trainer_rows(r, "preference", "preference")[0]
             for r in _rows(settings.get("pairs"), lambda row: check_row(row, "preference"))]
    measured = [m for m in counter.lengths(rows + pairs) if not isinstance(m, str)]
    answers = [m for m in counter.lengths(rows) if not isinstance(m, str)]
    if "max_new_tokens" in auto:
        settings["max_new_tokens"] = max((full - prompt for prompt, full in answers), default=16) + AUTO_SLACK
    if "max_length" in auto:
        settings["max_length"] = max((full for _, full in measured), default=256) + AUTO_SLACK
    ctx.note(where.removeprefix("stages."), f"eval lengths auto: max_new_tokens={settings['max_new_tokens']}, "
             f"max_length={settings['max_length']} (measured on {len(measured)} held-out rows)")
    return problems


def _messages(prompt: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _rows(path: str | None, problems_of: Any) -> list[dict[str, Any]]:
    """The valid rows of a held-out file (bad rows are reported by `rows_problems`)."""
    if not path:
        return []
    try:
        return [row for _, row in iter_rows(Path(path)) if not isinstance(row, BadRow) and not problems_of(row)]
    except (SourceError, OSError):
        return []


def _local_file(ctx: PlanContext, where: str, path: str | None) -> str | None:
    if path is None:
        return None
    local = Path(path).expanduser()
    if not local.is_file():
        ctx.problem(f"{where}: no such file '{path}'")
        return None
    return str(local.resolve())


def task_row_problems(row: Any) -> list[str]:
    """Why a held-out task row cannot be scored: it needs a prompt and a reference answer."""
    if not isinstance(row, dict):
        return ["expected an object with 'prompt' and 'answer'"]
    problems = []
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        if not prompt.strip():
            problems.append("'prompt' is empty")
    elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        if any(not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str) for m in prompt):
            problems.append("'prompt' messages need a string 'role' and 'content'")
        elif prompt[-1]["role"] != "user":
            problems.append(f"'prompt' must end with a user message, not {prompt[-1]['role']!r}")
    else:
        problems.append("'prompt' must be a string or a list of {role, content} messages")
    if not isinstance(row.get("answer"), (str, int, float)) or isinstance(row.get("answer"), bool):
        problems.append("'answer' (the reference answer the checker compares with) is missing or not a string")
    if row.get("task") is not None and not isinstance(row["task"], str):
        problems.append("'task' must be a string")
    if row.get("seen") is not None and not isinstance(row["seen"], bool):
        problems.append("'seen' must be true or false")
    return problems


def rows_problems(where: str, path: str, check) -> list[str]:
    """Every bad row of a small held-out file, grouped by reason, row numbers as the user sees them."""
    by_reason: dict[str, list[int]] = {}
    count = 0
    try:
        for number, row in iter_rows(Path(path)):
            count += 1
            reasons = [row.reason] if isinstance(row, BadRow) else check(row)
            for reason in reasons:
                by_reason.setdefault(reason, []).append(number)
    except (SourceError, OSError) as err:
        return [f"{where}: {err}"]
    if not count:
        return [f"{where}: {path} has no rows"]
    out = []
    for reason, rows in by_reason.items():
        more = f" (+{len(rows) - SHOW_ROWS} more)" if len(rows) > SHOW_ROWS else ""
        shown = ", ".join(map(str, rows[:SHOW_ROWS])) + more
        out.append(f"{where}: {os.path.basename(path)} row{'s' * (len(rows) > 1)} {shown}: {reason}")
    return out


def metric_problems(where: str, upstream: str, key: str, stage: dict[str, Any]) -> list[str]:
    """A gate's `<model>/<metric>` key against what eval stage `upstream` reports."""
    labels = [model_label(m) for m in stage.get("models") or []]
    model, _, metric = key.partition("/")
    if model not in labels:
        return [f"{where}.metric: stage '{upstream}' evaluates {', '.join(labels) or 'no models'}, not '{model}'"]
    if metric not in METRICS and not metric.startswith("accuracy/"):
        return [f"{where}.metric: '{metric}' is not an eval metric ({', '.join(METRICS)}, accuracy/<task>)"]
    return []


def describe(spec: Any) -> list[str]:
    """Plan-line parts: `models=checkpoint,sft,dpo  held-out=heldout.jsonl,prefs_eval.jsonl`."""
    held_out = [os.path.basename(spec.settings[k]) for k in ("tasks", "pairs") if spec.settings.get(k)]
    return ["models=" + ",".join(m.label for m in spec.models), "held-out=" + ",".join(held_out)]

"""The line a training stage prints per logging step, `[sft] step 20/300  loss 1.23  12s`, in one place:
stages print it (stages/lib/training.py), the live view on a terminal recognises it and shows a
progress bar instead (workflows/report/live.py). The numbers behind it are in progress.json
(posttrain/artifacts.py `Progress`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

# Metrics worth showing while a stage trains, in this order (everything is in history.jsonl).
HEADLINE_KEYS = ("loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "reward", "kl", "accuracy",
                 "eval_accuracy", "learning_rate")
STEP_LINE = re.compile(r"^\[(?P<stage>[^\]]+)\] step (?P<step>\d+)/(?P<max_steps>\d+)(\s|$)")


def headline(metrics: Mapping[str, object]) -> list[tuple[str, float]]:
    """(key, value) of the HEADLINE_KEYS present in `metrics`, in that order."""
    return [(k, float(v)) for k in HEADLINE_KEYS
            if isinstance(v := metrics.get(k), (int, float)) and not isinstance(v, bool)]


def step_line(stage: str, step: int, max_steps: int, metrics: Mapping[str, object], elapsed: float) -> str:
    parts = [f"{k} {v:.4g}" for k, v in headline(metrics)]
    return f"[{stage}] step {step}/{max_steps}  {'  '.join(parts)}  {elapsed:.0f}s"


def format_seconds(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`; `-` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

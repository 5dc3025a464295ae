"""The summary of an invocation: summary.json, and the table printed at the end."""

from __future__ import annotations

import os
import time
from typing import Any

from posttrain.artifacts import SUMMARY, TABLE_FILE
from posttrain.jsonio import write_json
from posttrain.pipeline import Plan, StageResult
from posttrain.status import DONE, Status

# Metrics worth a column in the console summary, in this order; everything is in summary.json.
HEADLINE_METRICS = ("train_loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "eval_accuracy",
                    "reward", "kl")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_summary(results: list[StageResult], summary_path: str, unwritten: str | None = None) -> str:
    """The table printed at the end; `unwritten`: why summary.json could not be written."""
    keys = [k for k in HEADLINE_METRICS if any(k in r.metrics for r in results)]
    rows = [["stage", "type", "status", "seconds", *keys]]
    for r in results:
        rows.append([r.name, r.type, str(r.status), f"{r.wall_seconds:.1f}", *(_fmt(r.metrics.get(k, "")) for k in keys)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["", "Summary:"]
    for row in rows:
        out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in results:
        if r.reason and r.status not in DONE:
            out.append(f"  {r.name}: {r.reason}")
        if r.metrics.get("data/dropped_rows"):  # on_invalid: drop (posttrain/data/prepare.py)
            out.append(f"  {r.name}: dropped {r.metrics['data/dropped_rows']:.0f} invalid data rows (see its stage.log)")
    out.extend(_tables(results))  # each eval stage's models side by side
    out.append(f"Written to {summary_path}" if unwritten is None else
               f"Not written to {summary_path} ({unwritten}): the table above is the summary")
    return "\n".join(out)


def _tables(results: list[StageResult]) -> list[str]:
    """The side-by-side table of every stage that wrote one (eval stages), for the end of the summary."""
    out = []
    for result in results:
        path = os.path.join(result.output_dir, TABLE_FILE)
        if result.status in (Status.COMPLETED, Status.CACHED) and os.path.isfile(path):
            with open(path) as f:
                out += ["", f"{result.name}:", *(f"  {line}".rstrip() for line in f.read().rstrip().splitlines())]
    return out


def summary_path(plan: Plan) -> str:
    return os.path.join(plan.run_dir, SUMMARY)


def write_summary(plan: Plan, results: list[StageResult]) -> str:
    """Raises: OSError (a full disk); the previous summary.json is then left whole."""
    path = summary_path(plan)
    write_json(path, {"pipeline": plan.name, "run_dir": plan.run_dir, "finished_at": time.time(),
                      "stages": [r.to_dict() for r in results]})
    return path

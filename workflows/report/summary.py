"""The summary of an invocation: summary.json, and the table printed at the end."""

from __future__ import annotations

import os
from typing import Any

from posttrain.artifacts import SUMMARY, TABLE_FILE
from posttrain.jsonio import write_json
from posttrain.pipeline import Plan, StageResult
from posttrain.status import DONE, OK, Status
from posttrain.tracking import PipelineTracker

# Metrics worth a column in the console summary, in this order; everything is in summary.json.
HEADLINE_METRICS = ("train_loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "kl")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_summary(results: list[StageResult], summary_path: str) -> str:
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
    out.append(f"Written to {summary_path}")
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


def write_summary(plan: Plan, results: list[StageResult]) -> str:
    path = os.path.join(plan.run_dir, SUMMARY)
    write_json(path, {"pipeline": plan.name, "run_dir": plan.run_dir, "stages": [r.to_dict() for r in results]})
    return path


def report(plan: Plan, tracker: PipelineTracker, results: list[StageResult]) -> int:
    """The end of an invocation: summary.json (also on the tracker), the table; the exit code."""
    path = write_summary(plan, results)
    tracker.log_summary(path)
    print(render_summary(results, path))
    return 0 if all(r.status in OK for r in results) else 1

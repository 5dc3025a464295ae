"""`posttrain report [run_dir]`: <run_dir>/report.html, the pipeline on one self-contained page.

It holds the summary table, the DAG coloured by status, every training stage's curves (loss,
reward accuracies and margins, rewards, KL, learning rate: whatever its history logged), the loss
of all stages on one axis, each comparing stage's models side by side (per model, and per task
type, seen apart from unseen), and the plan as it was printed. Charts are inline PNGs, the DAG
inline SVG: the file can be mailed, attached to MLflow (the pipeline's parent run) or opened
offline. A run writes it at its end; this command rewrites it from the run_dir alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from html import escape
from pathlib import Path
from typing import Any

from posttrain.artifacts import METRICS_FILE, REPORT_FILE, TABLE_FILE, StageDir
from posttrain.pipeline import Plan, StageResult
from posttrain.progress import format_seconds
from posttrain.status import Status
from workflows.report import charts
from workflows.report.dag_picture import svg
from workflows.report.summary import HEADLINE_METRICS
from workflows.state.observe import RUNNING, NotARunDir, RunState, StageState, load_record, observe, run_dir_argument

ATTEMPTED = (Status.COMPLETED, Status.CACHED, Status.FAILED, Status.INTERRUPTED, RUNNING)
STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
.meta { color: #666; font-size: 13px; }
table.summary { border-collapse: collapse; font-size: 13px; }
table.summary th, table.summary td { border-bottom: 1px solid #eee; padding: 4px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status-completed { color: #2e7d32; } .status-failed { color: #c62828; font-weight: bold; }
.status-interrupted, .status-skipped, .status-gated, .status-cancelled { color: #ef6c00; }
.status-cached, .status-given { color: #777; } .status-running { color: #1565c0; }
img.chart { max-width: 100%; display: block; margin: 8px 0 16px; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 12px; }
"""


def _samples_seen(folder: str) -> dict[str, bool | None]:
    """task type -> seen, from the per-sample verdicts a comparing stage wrote (results/samples.jsonl)."""
    seen: dict[str, bool | None] = {}
    try:
        with open(os.path.join(folder, "samples.jsonl")) as f:
            for line in f:
                row = json.loads(line)
                if row.get("task") and row["task"] not in seen:
                    seen[row["task"]] = row.get("seen")
    except (OSError, ValueError):
        pass
    return seen


def _img(uri: str | None, alt: str) -> str:
    return f'<img class="chart" alt="{escape(alt)}" src="{uri}">' if uri else ""


def _summary_table(state: RunState, summary: dict[str, Any] | None) -> str:
    results = {s["name"]: s for s in (summary or {}).get("stages", [])}
    keys = [k for k in HEADLINE_METRICS if any(k in s.metrics for s in state.stages)]
    head = "".join(f"<th>{escape(h)}</th>" for h in ["stage", "type", "status", "seconds", *keys, "details"])
    rows = []
    for s in state.stages:
        seconds = (results.get(s.name) or {}).get("wall_seconds") or s.elapsed_seconds
        cells = [f"<td>{escape(s.name)}</td>", f"<td>{escape(s.type)}</td>",
                 f'<td class="status-{escape(s.status.replace(" ", "-"))}">{escape(s.status)}</td>',
                 f'<td class="num">{format_seconds(seconds) if seconds else ""}</td>']
        cells += [f'<td class="num">{s.metrics[k]:.4g}</td>' if isinstance(s.metrics.get(k), (int, float))
                  else "<td></td>" for k in keys]
        cells.append(f"<td>{escape(s.detail)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="summary"><tr>{head}</tr>{"".join(rows)}</table>'


def _training(states: list[StageState]) -> str:
    # a stage that did not run in this invocation (skipped, not started) holds an earlier attempt's history
    histories = {s.name: StageDir(s.stage_dir).read_history() for s in states if s.status in ATTEMPTED}
    histories = {name: history for name, history in histories.items() if history}
    parts = []
    if len(histories) > 1:
        parts += ["<h3>Training loss, all stages</h3>",
                  _img(charts.loss_across_stages(histories), "loss across stages")]
    for name, history in histories.items():
        if uri := charts.training_curves(history):
            last = history[-1]["step"]
            meta = f"({len(history)} logged steps, up to step {last})"
            parts += [f"<h3>{escape(name)} <span class='meta'>{meta}</span></h3>", _img(uri, f"{name} training curves")]
    return "\n".join(parts)


def _comparisons(states: list[StageState]) -> str:
    parts = []
    for s in states:
        if s.status not in (Status.COMPLETED, Status.CACHED):
            continue  # results of an earlier attempt, or none
        path = Path(s.output_dir) / METRICS_FILE
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(metrics, dict) or not metrics:
            continue
        parts.append(f"<h3>{escape(s.name)} <span class='meta'>({escape(', '.join(metrics))})</span></h3>")
        parts.append(_img(charts.model_bars(metrics), f"{s.name}: metrics per model"))
        parts.append(_img(charts.task_bars(metrics, _samples_seen(s.output_dir)), f"{s.name}: accuracy per task type"))
        table = Path(s.output_dir) / TABLE_FILE
        if table.is_file():
            parts.append(f"<pre>{escape(table.read_text())}</pre>")
    return "\n".join(parts)


def build(run_dir: str) -> str:
    """The page's HTML. Raises: NotARunDir."""
    record, summary = load_record(run_dir)
    state = observe(run_dir)
    statuses = {s.name: s.status for s in state.stages}
    training = _training(state.stages)
    comparisons = _comparisons(state.stages)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started_at)) if state.started_at else "?"
    sections = [
        f"<h1>Pipeline {escape(state.pipeline)}</h1>",
        f"<p class='meta'>{escape(run_dir)} &middot; started {when} &middot; {escape(state.state)} &middot; "
        f"report written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        "<h2>Summary</h2>", _summary_table(state, summary),
        "<h2>Pipeline</h2>", svg(record, statuses),
        "<h2>Training</h2>", training or "<p>No stage logged training steps.</p>",
        "<h2>Evaluation</h2>", comparisons or "<p>No stage compared models.</p>",
    ]
    if record.plan_text:
        sections += ["<h2>Plan</h2>", f"<pre>{escape(record.plan_text)}</pre>"]
    if record.command:
        sections.append(f"<p class='meta'>{escape(record.command)}</p>")
    head = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(state.pipeline)} — "
            f"posttrain report</title><style>{STYLE}</style></head><body>\n")
    return head + "\n".join(sections) + "\n</body></html>\n"


def write_report(run_dir: str) -> str:
    """Write <run_dir>/report.html (atomically); its path. Raises: NotARunDir, OSError."""
    path = Path(run_dir) / REPORT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(build(run_dir))
    os.replace(tmp, path)
    return str(path)


def report_at_end(plan: Plan, results: list[StageResult]) -> str | None:
    """The report of an invocation that just ended; None when nothing new ran (every stage cached and the
    report is there) or it could not be drawn (a warning says why: the run's results are not affected)."""
    path = Path(plan.run_dir) / REPORT_FILE
    if path.is_file() and all(r.status in (Status.CACHED, Status.GIVEN) for r in results):
        return None
    try:
        return write_report(plan.run_dir)
    except Exception as err:  # noqa: BLE001 - a report is a view of the run: it must not fail it
        print(f"warning: could not write {path} ({type(err).__name__}: {err}); "
              f"`posttrain report {plan.run_dir}` tries again", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posttrain report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a pipeline's run_dir (default: this directory if it is one, "
                                                   "else the newest run under ./outputs)")
    args = parser.parse_args(argv)
    try:
        path = write_report(run_dir_argument(args.run_dir))
    except NotARunDir as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

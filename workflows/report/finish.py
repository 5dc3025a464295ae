"""The end of an invocation: summary.json and report.html (both also on the tracker), the console table,
the exit code. Used by a single run and by each variant at the end of a sweep."""

from __future__ import annotations

from posttrain.pipeline import Plan, StageResult
from posttrain.status import OK
from posttrain.tracking import PipelineTracker
from workflows.report.html import report_at_end
from workflows.report.summary import render_summary, summary_path, write_summary


def finish(plan: Plan, tracker: PipelineTracker, results: list[StageResult]) -> int:
    """0 when every stage ended well, else 1. A full disk leaves the table as the only summary."""
    path, unwritten = summary_path(plan), None
    try:
        write_summary(plan, results)
        tracker.log_summary(path)
        if report := report_at_end(plan, results):  # <run_dir>/report.html: curves, evals, DAG
            tracker.log_summary(report)
    except OSError as err:
        unwritten = err.strerror
    print(render_summary(results, path, unwritten))
    return 0 if all(r.status in OK for r in results) else 1

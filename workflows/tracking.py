"""The orchestrator's side of tracking: start the backend for a plan, end it with the true status."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from posttrain.pipeline import Plan
from posttrain.tracking import PipelineTracker, backend
from posttrain.tracking.none import NullTracker
from workflows.report.dag_picture import mermaid_markdown, svg
from workflows.report.plan_text import render_plan


def start(plan: Plan) -> PipelineTracker:
    """The tracker for this invocation, after checking the store.

    Raises:
        TrackingError: the store is unreachable or unusable; nothing was started.
    """
    if plan.tracking.backend == "none":
        return NullTracker()
    if all(stage.external or stage.cached for stage in plan.stages):
        # Nothing will train: the runs that produced these stages already hold their metrics, and
        # skipping the store (a ~5 s import and a round-trip) keeps a cached re-run near 1 s; only runs
        # an earlier invocation left open (it died, or lost the store) make it reach the store.
        backend(plan.tracking.backend).settle(plan)
        print("tracking: every stage is cached; no new runs (see the runs that trained them)")
        return NullTracker()
    tracker = backend(plan.tracking.backend)
    tracker.preflight(plan.tracking)
    return tracker.start(plan, {"plan.txt": render_plan(plan) + "\n", "dag.md": mermaid_markdown(plan),
                                "dag.svg": svg(plan)})


@contextlib.contextmanager
def tracked(plan: Plan) -> Iterator[PipelineTracker]:
    """`with tracked(plan) as tracker: launcher.run(plan, tracker)`; statuses stay true on any exit.

    Raises:
        TrackingError: on entry, when tracking cannot start.
    """
    tracker = start(plan)

    def pictures(statuses: dict[str, str]) -> dict[str, str]:
        return {"dag.md": mermaid_markdown(plan, statuses), "dag.svg": svg(plan, statuses)}

    try:
        yield tracker
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into one by workflows/run.py
        tracker.close("KILLED", pictures)
        raise
    except BaseException:
        tracker.close("FAILED", pictures)
        raise
    tracker.close(None, pictures)

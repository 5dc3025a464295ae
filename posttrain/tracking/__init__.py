"""Experiment tracking: one protocol, with a backend per `tracking.backend` (mlflow, none).

A backend serves both sides of a run:
- the orchestrator checks the store before anything runs (`preflight`), starts the pipeline's
  record (`start` -> a `PipelineTracker`), gets the environment each stage process needs
  (`PipelineTracker.stage_env`), reports each stage's end and closes with the true status;
- a stage process opens its own record (`attach`, rank 0 only), tells TRL where to report
  (`report_to`) and logs what TRL does not (`log_table`, `log_artifact`).
A new backend is one module with a `BACKEND` object, a conf/tracking/<name>.yaml and a line in
BACKENDS. Nothing else imports a tracking library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from posttrain.pipeline import Plan, PlannedStage, StageResult
from posttrain.spec import StageSpec, TrackingSpec

BACKENDS = {"mlflow": "posttrain.tracking.mlflow", "none": "posttrain.tracking.none"}
Pictures = Callable[[dict[str, str]], dict[str, str]]  # stage statuses -> files to attach


class TrackingError(Exception):
    """Tracking cannot start (server unreachable, bad store, deleted experiment): nothing ran."""


class PipelineTracker(Protocol):
    """The orchestrator's side of one invocation; every method is cheap and never raises."""

    def stage_env(self, stage: PlannedStage) -> dict[str, str]:
        """Environment for the stage's process (its run id); called just before it starts."""

    def stage_end(self, stage: PlannedStage, result: StageResult) -> None:
        """Every stage that ran, was cached, skipped or gated."""

    def log_summary(self, path: str) -> None:
        """Attach a file of the invocation's outcome (summary.json, report.html) to its record."""

    def close(self, status: str | None = None, pictures: Pictures | None = None) -> None:
        """End the invocation's record: `status` KILLED/FAILED on an abort, None = from the stages.
        `pictures(statuses)`: the DAG drawn with each stage's final status (file name -> text)."""


class Backend(Protocol):
    label: str  # the name users know it by ("MLflow")
    tag_env: str | None  # an environment variable of JSON tags the stage's run takes (a scheduler's job id)

    def preflight(self, tracking: TrackingSpec) -> None:
        """Check the store within seconds. Raises: TrackingError naming what to do."""

    def start(self, plan: Plan, artifacts: dict[str, str]) -> PipelineTracker:
        """The invocation's record, with `artifacts` (plan.txt, dag.svg ...) attached.
        Raises: TrackingError."""

    def attach(self, spec: StageSpec) -> bool:
        """In a stage process: open the stage's record; whether this process logs."""

    def report_to(self, spec: StageSpec) -> str | list[str]:
        """TRL's `report_to` for this process."""

    def log_table(self, spec: StageSpec, name: str, columns: dict[str, list[Any]]) -> None: ...

    def log_artifact(self, spec: StageSpec, path: str, folder: str | None = None) -> None: ...

    def adapt_trainer(self, spec: StageSpec, trainer: Any) -> None:
        """In a stage process, once its Trainer exists: shape what the Trainer itself reports here."""

    def run_link(self, stage_dir: str) -> str | None:
        """Where the latest attempt of the stage in `stage_dir` is shown (a URL, or the run and its store),
        from what the stage folder records; None when it has no record. No store is contacted."""


def backend(name: str) -> Backend:
    """Raises: TrackingError for a name that is not in BACKENDS."""
    if name not in BACKENDS:
        raise TrackingError(f"tracking.backend: '{name}' is not one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name]).BACKEND

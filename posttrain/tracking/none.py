"""tracking=none: nothing is logged, and no tracking library is imported."""

from __future__ import annotations

from typing import Any

from posttrain.pipeline import Plan, PlannedStage, StageResult
from posttrain.spec import StageSpec, TrackingSpec
from posttrain.tracking import Pictures


class NullTracker:
    def stage_env(self, stage: PlannedStage) -> dict[str, str]:
        return {}

    def stage_end(self, stage: PlannedStage, result: StageResult) -> None:
        pass

    def log_summary(self, path: str) -> None:
        pass

    def close(self, status: str | None = None, pictures: Pictures | None = None) -> None:
        pass


class NullBackend:
    label = "no"
    tag_env = None

    def preflight(self, tracking: TrackingSpec) -> None:
        pass

    def start(self, plan: Plan, artifacts: dict[str, str]) -> NullTracker:
        return NullTracker()

    def attach(self, spec: StageSpec) -> bool:
        return False

    def report_to(self, spec: StageSpec) -> str:
        return "none"

    def log_table(self, spec: StageSpec, name: str, columns: dict[str, list[Any]]) -> None:
        pass

    def log_artifact(self, spec: StageSpec, path: str, folder: str | None = None) -> None:
        pass

    def adapt_trainer(self, spec: StageSpec, trainer: Any) -> None:
        pass

    def run_link(self, stage_dir: str) -> None:
        return None


BACKEND = NullBackend()

"""MLflow tracking: one parent run per invocation (config, plan, DAG, summary, each stage's final
metrics), a nested run per stage (its stage.yaml, lineage tags, logs, training curves). What lands
where is in README.md ("Tracking with MLflow"); metric keys are keys.py's. mlflow is imported only
when a tracked pipeline starts; a tracking failure after the start is reported and training goes on.
"""

from __future__ import annotations

from typing import Any

from posttrain.pipeline import Plan
from posttrain.spec import StageSpec, TrackingSpec
from posttrain.tracking import TrackingError
from posttrain.tracking.mlflow import stage
from posttrain.tracking.mlflow.pipeline import MlflowTracker, run_link
from posttrain.tracking.mlflow.preflight import preflight


class MlflowBackend:
    label = "MLflow"
    tag_env = "MLFLOW_TAGS"  # mlflow.start_run reads it (a JSON object of tags)

    def preflight(self, tracking: TrackingSpec) -> None:
        preflight(str(tracking.uri))

    def start(self, plan: Plan, artifacts: dict[str, str]) -> Any:
        try:
            return MlflowTracker(plan, artifacts)
        except TrackingError:
            raise
        except Exception as err:  # noqa: BLE001 - a store that fails its first call: stop before training
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TrackingError(f"could not start MLflow tracking at {plan.tracking.uri}: {first}. "
                                f"Fix tracking.uri or run with tracking=none. No stage was started.") from None

    def attach(self, spec: StageSpec) -> bool:
        return stage.attach(spec) is not None

    def report_to(self, spec: StageSpec) -> str | list[str]:
        return stage.report_to(spec)

    def log_table(self, spec: StageSpec, name: str, columns: dict[str, list[Any]]) -> None:
        stage.log_table(spec, name, columns)

    def log_artifact(self, spec: StageSpec, path: str, folder: str | None = None) -> None:
        stage.log_artifact(spec, path, folder)

    def adapt_trainer(self, spec: StageSpec, trainer: Any) -> None:
        stage.curves_first(trainer)

    def run_link(self, stage_dir: str) -> str | None:
        return run_link(stage_dir)


BACKEND = MlflowBackend()

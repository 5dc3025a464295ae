"""`tracking.register=<stage>`: the stage's model logged under its run and registered as a new version."""

from __future__ import annotations

import contextlib
import os
import sys

from posttrain.pipeline import PlannedStage
from posttrain.tracking.mlflow.store import Store


def register_model(store: Store, pipeline: str, stage: PlannedStage, run_id: str, registered_model: str | None) -> None:
    """Log the stage's model dir under `model/` of its run and register it as a new model version."""
    from mlflow.exceptions import MlflowException

    client = store.client
    model_dir = stage.spec.model_dir
    if not os.path.isdir(model_dir):
        print(f"tracking: tracking.register={stage.name}: no model dir at {model_dir}; nothing registered",
              file=sys.stderr)
        return
    client.log_artifacts(run_id, model_dir, "model")
    name = registered_model or f"{pipeline}-{stage.name}"
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model(name, description=f"posttrain pipeline {pipeline}, stage {stage.name}")
    version = client.create_model_version(
        name, f"runs:/{run_id}/model", run_id=run_id,
        tags={"posttrain.stage": stage.name, "posttrain.pipeline": pipeline, "posttrain.output_dir": model_dir},
        description=f"{stage.type} stage '{stage.name}' of {pipeline} ({model_dir})",
    )
    store.tags(run_id, {"posttrain.registered_model": f"{name}/{version.version}"})
    print(f"tracking: registered {model_dir} as model '{name}' version {version.version}", flush=True)

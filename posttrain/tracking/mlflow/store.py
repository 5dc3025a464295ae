"""An MLflow store as posttrain writes to it: batched params, tags and metrics, texts as artifacts."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from posttrain.tracking import TrackingError
from posttrain.tracking.redact import mlflow_name

BATCH = 100  # MLflow's limit of params (and tags) per log_batch
METRIC_BATCH = 1000


def metric_items(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics under MLflow-valid names: `sft` + `rewards/accuracies` -> `sft.rewards/accuracies`."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[mlflow_name(f"{prefix}.{key}" if prefix else key)] = float(value)
    return out


class Store:
    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

    def experiment(self, name: str) -> str:
        """The id of experiment `name`, created when missing.

        Raises:
            TrackingError: the experiment is deleted (the message says how to restore it).
        """
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if self.uri.startswith("sqlite:///"):  # artifacts next to the database, not in the working dir
                safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
                location = str(Path(self.uri[len("sqlite:///"):]).parent / "mlruns" / safe)
            return self.client.create_experiment(name, artifact_location=location)
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment '{name}' is deleted: restore it (`mlflow experiments restore --experiment-id "
                f"{experiment.experiment_id}` with MLFLOW_TRACKING_URI={self.uri}) or set tracking.experiment=<new name>"
            )
        return experiment.experiment_id

    def params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, params=items[i: i + BATCH], synchronous=True)

    def tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(mlflow_name(k) if not k.startswith("mlflow.") else k, str(v)[:8000])
                 for k, v in tags.items() if v is not None]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, tags=items[i: i + BATCH], synchronous=True)

    def metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(items), METRIC_BATCH):
            self.client.log_batch(run_id, metrics=items[i: i + METRIC_BATCH], synchronous=True)

    def texts(self, run_id: str, files: dict[str, str]) -> None:
        with tempfile.TemporaryDirectory(prefix="posttrain-mlflow-") as tmp:
            for name, text in files.items():
                Path(tmp, name).write_text(text)
            self.client.log_artifacts(run_id, tmp)

    def datasets(self, run_id: str, identities: list[dict[str, str]]) -> None:
        """Data sources as MLflow dataset inputs, so the runs table's Dataset column names what a stage
        read (`identities`: posttrain.tracking.lineage.data_identities)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for entry in identities:
            digest = entry["digest"].split(":", 1)[-1][:16] if ":" in entry["digest"] else entry["digest"][:16]
            name = os.path.basename(entry["path"].rstrip("/")) or entry["path"]
            source = json.dumps({"uri": entry["path"], "identity": entry["digest"]})
            dataset = Dataset(name=name[:500], digest=digest, source_type="local" if entry["path"].startswith("/")
                              else "hub", source=source)
            context = "train" if entry["group"] == "sources" else "eval"
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

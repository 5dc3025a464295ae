"""MlflowTracker: logs one pipeline invocation to MLflow (the layout is described in
workflows/tracking.py, which decides whether to track and makes this object)."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from workflows.fingerprint import read_json
from workflows.lineage import data_identities, git_commit, posttrain_version
from workflows.redact import loggable_params, mlflow_name, redact
from workflows.tracking import TrackingError

if TYPE_CHECKING:
    from workflows.plan import Plan, PlannedStage
    from workflows.report import StageResult

RUN_FILE = "mlflow_run.json"  # in each stage dir: the run that attempt logged into
# A stage result's status -> its run's final status; other statuses (`submitted` to a scheduler) leave
# the run open for the stage process to end. `gated`: stopped by its promotion gate, not a crash.
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "gated": "KILLED"}
PENDING = ("submitted", "queued", "pending", "running")  # the pipeline goes on without this process
# Spec keys left out of a stage run's params: bulky duplicates (the fingerprint's input record).
UNLOGGED_SPEC_KEYS = ("fingerprint_inputs",)
PARAM_BATCH = 100  # MLflow's limit of params per log_batch


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def metric_items(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics under MLflow-valid names: `sft` + `rewards/accuracies` -> `sft.rewards/accuracies`."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[mlflow_name(f"{prefix}.{key}" if prefix else key)] = float(value)
    return out


class MlflowTracker:
    """Logs one pipeline invocation to MLflow (see the module docstring for the layout)."""

    def __init__(self, plan: Plan, tracking: dict[str, Any]):
        from mlflow.tracking import MlflowClient

        self.plan = plan
        self.tracking = tracking
        self.uri = tracking["uri"]
        self.client = MlflowClient(tracking_uri=self.uri)
        self.commit = git_commit()
        self.experiment_id = self._experiment(tracking["experiment"])
        self.running: dict[str, str] = {}  # stage -> run id, started and not ended
        self.produced_by: dict[str, str] = {}  # stage -> the run that built its outputs
        self.statuses: dict[str, str] = {}
        self.closed = False
        name = f"{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tags = {**self._common_tags(), "posttrain.role": "pipeline", "posttrain.command": self._command(),
                "mlflow.note.content": self._parent_note()}
        self.parent_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        where = (f"{self.uri}/{self._run_link(self.parent_id)}" if self.uri.startswith("http")
                 else f"view it with `mlflow ui --backend-store-uri {self.uri}`")
        print(f"tracking: MLflow run {name} in experiment '{tracking['experiment']}'; {redact(where)}", flush=True)
        self._log_params(self.parent_id, loggable_params(plan.config))
        from workflows.dag_picture import mermaid_markdown, svg
        from workflows.report import render_plan

        self._log_texts(self.parent_id, {
            "config.yaml": yaml.safe_dump(redact(plan.config), sort_keys=False),
            "plan.txt": render_plan(plan) + "\n",
            "dag.md": mermaid_markdown(plan),
            "dag.svg": svg(plan),
        })

    # ------------------------------------------------------------------ setup helpers

    def _experiment(self, name: str) -> str:
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

    def _common_tags(self) -> dict[str, str]:
        tags = {
            "posttrain.pipeline": self.plan.name,
            "posttrain.run_dir": self.plan.run_dir,
            "posttrain.version": posttrain_version(),
            "mlflow.user": getpass.getuser(),
            "mlflow.source.name": "posttrain",
            "mlflow.source.type": "LOCAL",
        }
        if self.commit:
            tags["posttrain.git_commit"] = self.commit
            tags["mlflow.source.git.commit"] = self.commit.removesuffix("-dirty")
        return tags

    def _command(self) -> str:
        import shlex

        return shlex.join(redact(["python", "-m", "workflows.run", *sys.argv[1:]]))  # each `key=value` checked

    def _parent_note(self) -> str:
        lines = [f"Pipeline **{self.plan.name}**, run_dir `{self.plan.run_dir}`.", "", "| stage | type | upstream |",
                 "|---|---|---|"]
        for stage in self.plan.stages:
            lines.append(f"| {stage.name} | {stage.type} | {', '.join(stage.upstream) or '-'} |")
        lines += ["", "Artifacts: `dag.svg` (picture), `plan.txt`, `config.yaml` (resolved), `summary.json`."]
        return "\n".join(lines)

    def _run_link(self, run_id: str) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{run_id}"

    # ------------------------------------------------------------------ logging helpers

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, params=items[i: i + PARAM_BATCH], synchronous=True)

    def _log_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(mlflow_name(k) if not k.startswith("mlflow.") else k, str(v)[:8000])
                 for k, v in tags.items() if v is not None]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, tags=items[i: i + PARAM_BATCH], synchronous=True)

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i: i + 1000], synchronous=True)

    def _log_texts(self, run_id: str, files: dict[str, str]) -> None:
        with tempfile.TemporaryDirectory(prefix="posttrain-mlflow-") as tmp:
            for name, text in files.items():
                Path(tmp, name).write_text(text)
            self.client.log_artifacts(run_id, tmp)

    def _warn(self, what: str, err: BaseException) -> None:
        print(f"tracking: could not {what} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
              f"training goes on", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ stages

    def _stage_tags(self, stage: PlannedStage) -> dict[str, Any]:
        spec = stage.spec
        tags: dict[str, Any] = {
            **self._common_tags(),
            "mlflow.parentRunId": self.parent_id,
            "posttrain.role": "stage",
            "posttrain.stage": stage.name,
            "posttrain.stage_type": stage.type,
            "posttrain.stage_dir": stage.stage_dir,
            "posttrain.output_dir": spec.get("model_dir"),
            "posttrain.fingerprint": spec.get("fingerprint"),
            "posttrain.upstream": ",".join(stage.upstream),
            "posttrain.command": " ".join(stage.command),
        }
        for up in stage.upstream:
            tags[f"posttrain.upstream.{up}.run_id"] = self._producer(up)
            tags[f"posttrain.upstream.{up}.output_dir"] = self.plan.stage(up).spec.get("model_dir")
        for role in ("policy", "reference"):
            ref = spec.get(role)
            if ref:
                tags[f"posttrain.input.{role}"] = ref.get("path")
                tags[f"posttrain.input.{role}_from"] = ref.get("ref")
        if spec.get("type") == "checkpoint":
            model = spec.get("model") or {}
            tags["posttrain.input.model"] = model.get("name_or_path") or f"built from config ({model.get('architecture')})"
        for entry in data_identities(spec):
            key = f"posttrain.data.{entry['group']}.{entry['index']}"
            tags[f"{key}.path"] = entry["path"]
            tags[f"{key}.digest"] = entry["digest"]
        return tags

    def _stage_note(self, stage: PlannedStage) -> str:
        lines = [f"Stage **{stage.name}** ({stage.type}) of pipeline [{self.plan.name}]"
                 f"({self._run_link(self.parent_id)}).", ""]
        for up in stage.upstream:
            producer = self._producer(up)
            link = f"[{up}]({self._run_link(producer)})" if producer else up
            lines.append(f"- upstream {link}: `{self.plan.stage(up).spec.get('model_dir')}`")
        for entry in data_identities(stage.spec):
            lines.append(f"- data ({entry['group']}): `{entry['path']}` {entry['digest']}")
        lines.append(f"- output: `{stage.spec.get('model_dir')}`")
        return "\n".join(lines)

    def _producer(self, name: str) -> str | None:
        """The run that built stage `name`'s outputs: this invocation's, or the one recorded on disk."""
        if name in self.produced_by:
            return self.produced_by[name]
        stage = self.plan.stage(name)
        if stage.external:
            return None
        record = read_json(Path(stage.stage_dir) / RUN_FILE) or {}
        return record.get("run_id") if record.get("tracking_uri") == self.uri else None

    def _resumable(self, stage: PlannedStage) -> str | None:
        """The run of an interrupted attempt this stage continues (same store, fingerprint, a checkpoint)."""
        record = read_json(Path(stage.stage_dir) / RUN_FILE)
        if not record or record.get("tracking_uri") != self.uri or record.get("experiment_id") != self.experiment_id:
            return None
        if not stage.spec.get("resume_from") or record.get("fingerprint") != stage.spec.get("fingerprint"):
            return None
        with contextlib.suppress(Exception):
            run = self.client.get_run(record["run_id"])
            if run.info.lifecycle_stage == "active":
                return run.info.run_id
        return None

    def on_stage_start(self, stage: PlannedStage) -> dict[str, str]:
        """Create (or reopen) the stage's run; the returned env makes the stage process log into it."""
        try:
            run_id = self._resumable(stage)
            tags = self._stage_tags(stage)
            if run_id:
                previous = self.client.get_run(run_id).data.tags.get("mlflow.parentRunId")
                self.client.update_run(run_id, status="RUNNING")
                tags["posttrain.resumed"] = "true"
                tags["posttrain.previous_parent_run_id"] = previous
            else:
                earlier = (read_json(Path(stage.stage_dir) / RUN_FILE) or {}).get("run_id")
                run_id = self.client.create_run(self.experiment_id, run_name=stage.name, tags={
                    "mlflow.parentRunId": self.parent_id}).info.run_id
                tags["posttrain.previous_attempt_run_id"] = earlier
                spec = {k: v for k, v in stage.spec.items() if k not in UNLOGGED_SPEC_KEYS}
                self._log_params(run_id, loggable_params(spec, prefix="stage"))
                self._log_datasets(run_id, stage)
            tags["mlflow.note.content"] = self._stage_note(stage)
            self._log_tags(run_id, tags)
            _write_json(Path(stage.stage_dir) / RUN_FILE, {
                "run_id": run_id, "tracking_uri": self.uri, "experiment_id": self.experiment_id,
                "parent_run_id": self.parent_id, "fingerprint": stage.spec.get("fingerprint"), "status": "RUNNING",
            })
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn(f"create the MLflow run of stage '{stage.name}'", err)
            return {"POSTTRAIN_TRACKING": "off"}  # the stage must not start a stray run of its own
        self.running[stage.name] = run_id
        self.produced_by[stage.name] = run_id
        return {"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": self.uri,
                "MLFLOW_EXPERIMENT_NAME": self.tracking["experiment"]}

    def _log_datasets(self, run_id: str, stage: PlannedStage) -> None:
        """Datasets as MLflow inputs, so the runs table's Dataset column names what each stage read."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for entry in data_identities(stage.spec):
            digest = entry["digest"].split(":", 1)[-1][:16] if ":" in entry["digest"] else entry["digest"][:16]
            name = os.path.basename(entry["path"].rstrip("/")) or entry["path"]
            source = json.dumps({"uri": entry["path"], "identity": entry["digest"]})
            dataset = Dataset(name=name[:500], digest=digest, source_type="local" if entry["path"].startswith("/")
                              else "hub", source=source)
            context = "train" if entry["group"] == "sources" else "eval"
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def on_stage_end(self, stage: PlannedStage, result: StageResult) -> None:
        """Artifacts, final metrics and the true status of the stage's run; its summary on the parent."""
        self.statuses[stage.name] = result.status
        try:
            self._log_tags(self.parent_id, {f"posttrain.status.{stage.name}": result.status})
            if result.status == "cached":
                self._cached(stage, result)
            run_id = self.running.pop(stage.name, None)
            if run_id:
                self._end_stage_run(stage, result, run_id)
            if result.metrics:
                self._log_metrics(self.parent_id, {**metric_items(stage.name, result.metrics)})
            if result.wall_seconds:
                self._log_metrics(self.parent_id, {mlflow_name(f"{stage.name}.wall_seconds"): result.wall_seconds})
        except Exception as err:  # noqa: BLE001
            self._warn(f"log the end of stage '{stage.name}'", err)

    def _end_stage_run(self, stage: PlannedStage, result: StageResult, run_id: str) -> None:
        folder = Path(stage.stage_dir)
        files = {}
        if (folder / "stage.yaml").is_file():
            files["stage.yaml"] = yaml.safe_dump(redact(yaml.safe_load((folder / "stage.yaml").read_text())),
                                                 sort_keys=False)
        for name in ("stage.log", "manifest.json"):
            if (folder / name).is_file():
                files[name] = (folder / name).read_text(errors="replace")
        if files:
            self._log_texts(run_id, files)
        logged = self.client.get_run(run_id).data.metrics
        missing = {k: v for k, v in metric_items("", result.metrics).items() if k not in logged}
        step = int(result.metrics.get("global_step", 0) or 0)
        self._log_metrics(run_id, {**missing, "wall_seconds": result.wall_seconds}, step=step)
        self._log_tags(run_id, {"posttrain.status": result.status, "posttrain.reason": result.reason or None})
        if self.tracking.get("register") == stage.name and result.status == "completed":
            self._register(stage, run_id)
        status = STATUS.get(result.status)
        if status:  # any other status (a job queued on a scheduler): the stage ends its run itself
            self.client.set_terminated(run_id, status)
        record = read_json(folder / RUN_FILE) or {}
        manifest = read_json(folder / "manifest.json") or {}
        record.update(status=status or result.status, manifest_finished_at=manifest.get("finished_at"))
        _write_json(folder / RUN_FILE, record)

    def _cached(self, stage: PlannedStage, result: StageResult) -> None:
        """A child run that says `cached` and points at the run that built the model (if known)."""
        folder = Path(stage.stage_dir)
        record = read_json(folder / RUN_FILE) or {}
        manifest = read_json(folder / "manifest.json") or {}
        same_store = record.get("tracking_uri") == self.uri
        source = record.get("run_id") if same_store and record.get("manifest_finished_at") == manifest.get(
            "finished_at") else None
        tags = {**self._stage_tags(stage), "posttrain.cached": "true", "posttrain.source_run_id": source,
                "posttrain.status": "cached",
                "mlflow.note.content": f"Cached: outputs of an earlier run"
                                       f"{f' ([{source}]({self._run_link(source)}))' if source else ''} were reused; "
                                       "nothing was trained in this invocation."}
        run_id = self.client.create_run(self.experiment_id, run_name=stage.name,
                                        tags={"mlflow.parentRunId": self.parent_id}).info.run_id
        self._log_tags(run_id, tags)
        if result.metrics:
            self._log_metrics(run_id, metric_items("", result.metrics))
        if self.tracking.get("register") == stage.name:
            self._register(stage, run_id)
        self.client.set_terminated(run_id, "FINISHED")
        self.produced_by[stage.name] = source or run_id

    def _register(self, stage: PlannedStage, run_id: str) -> None:
        """Log the stage's model dir under `model/` of its run and register it as a new model version."""
        from mlflow.exceptions import MlflowException

        model_dir = stage.spec.get("model_dir")
        if not model_dir or not os.path.isdir(model_dir):
            print(f"tracking: tracking.register={stage.name}: no model dir at {model_dir}; nothing registered",
                  file=sys.stderr)
            return
        self.client.log_artifacts(run_id, model_dir, "model")
        name = self.tracking.get("registered_model") or f"{self.plan.name}-{stage.name}"
        with contextlib.suppress(MlflowException):  # already registered
            self.client.create_registered_model(name, description=f"posttrain pipeline {self.plan.name}, "
                                                                  f"stage {stage.name}")
        version = self.client.create_model_version(
            name, f"runs:/{run_id}/model", run_id=run_id,
            tags={"posttrain.stage": stage.name, "posttrain.pipeline": self.plan.name,
                  "posttrain.output_dir": model_dir},
            description=f"{stage.type} stage '{stage.name}' of {self.plan.name} ({model_dir})",
        )
        self._log_tags(run_id, {"posttrain.registered_model": f"{name}/{version.version}"})
        print(f"tracking: registered {model_dir} as model '{name}' version {version.version}", flush=True)

    # ------------------------------------------------------------------ the end

    def log_summary(self, path: str) -> None:
        try:
            self.client.log_artifact(self.parent_id, path)
        except Exception as err:  # noqa: BLE001
            self._warn("log summary.json", err)

    def close(self, status: str | None = None) -> None:
        """End what is still open: stage runs as KILLED/FAILED on an abort; the parent with the
        pipeline's status (`status` overrides it: KILLED on Ctrl-C or SIGTERM)."""
        if self.closed:
            return
        self.closed = True
        try:
            for name, run_id in list(self.running.items()):
                if status:  # aborted while this stage ran
                    self.client.set_terminated(run_id, status)
                    self._log_tags(run_id, {"posttrain.status": "interrupted"})
                    self._log_tags(self.parent_id, {f"posttrain.status.{name}": "interrupted"})
                    self.statuses[name] = "interrupted"
                    record_path = Path(self.plan.stage(name).stage_dir) / RUN_FILE
                    _write_json(record_path, {**(read_json(record_path) or {}), "status": status})
            self.running.clear()
            from workflows.dag_picture import mermaid_markdown, svg

            self._log_texts(self.parent_id, {"dag.md": mermaid_markdown(self.plan, self.statuses),
                                             "dag.svg": svg(self.plan, self.statuses)})
            final = status or self._pipeline_status()
            if final:
                self.client.set_terminated(self.parent_id, final)
        except Exception as err:  # noqa: BLE001
            self._warn("end the pipeline's MLflow run", err)

    def _pipeline_status(self) -> str | None:
        """FINISHED when every stage is done, None (stay RUNNING) while some are queued elsewhere."""
        values = set(self.statuses.values())
        if values & set(PENDING):
            return None
        if "interrupted" in values:
            return "KILLED"
        if values <= {"completed", "cached", "given"}:
            return "FINISHED"
        return "FAILED"  # failed, skipped, gated: the pipeline did not deliver every stage

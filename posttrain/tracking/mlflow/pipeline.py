"""The orchestrator's side of MLflow tracking: the pipeline's parent run and a child run per stage
(the layout is described in posttrain/tracking/mlflow/__init__.py)."""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import sys
import time
from typing import Any

import yaml

from posttrain.artifacts import MANIFEST, STAGE_LOG, STAGE_YAML
from posttrain.jsonio import read_json, write_json
from posttrain.pipeline import Plan, PlannedStage, StageResult
from posttrain.status import DONE, Status
from posttrain.tracking import Pictures
from posttrain.tracking import TrackingError
from posttrain.tracking.lineage import data_identities, git_commit, posttrain_version
from posttrain.tracking.mlflow.bounds import bound_requests
from posttrain.tracking.mlflow.keys import by_metric, eval_beside_training, per_model, split_constants
from posttrain.tracking.mlflow.preflight import preflight
from posttrain.tracking.mlflow.settle import RUN_FILE, settle_open_runs, update_record
from posttrain.tracking.mlflow.registry import register_model
from posttrain.tracking.mlflow.store import Store, metric_items
from posttrain.tracking.redact import loggable_params, mlflow_name, redact

# A stage result's status -> its run's final status; other statuses (`submitted` to a scheduler) leave
# the run open for the stage process to end. `gated`: stopped by its promotion gate, not a crash.
RUN_STATUS = {Status.COMPLETED: "FINISHED", Status.FAILED: "FAILED", Status.INTERRUPTED: "KILLED",
              Status.GATED: "KILLED"}
PENDING = (Status.SUBMITTED,)  # the pipeline goes on without this process
SWEEP_VARIANT_TAG = "posttrain.sweep.variant"  # the overrides that make a sweep's variant (workflows/sweep.py)
UNLOGGED_SPEC_KEYS = ("fingerprint_inputs",)  # bulky duplicates, left out of a stage run's params


class MlflowTracker:
    """Logs one pipeline invocation to MLflow."""

    def __init__(self, plan: Plan, artifacts: dict[str, str]):
        self.plan = plan
        self.tracking = plan.tracking
        self.uri = str(self.tracking.uri)
        bound_requests()  # every HTTP call bounded in time (posttrain/tracking/mlflow/bounds.py)
        self.store = Store(self.uri)
        self.client = self.store.client
        self.commit = git_commit()
        self.experiment_id = self.store.experiment(str(self.tracking.experiment))
        self.running: dict[str, str] = {}  # stage -> run id, started and not ended
        self.produced_by: dict[str, str] = {}  # stage -> the run that built its outputs
        self.statuses: dict[str, Status] = {}
        self.closed = False
        self.lost: str | None = None  # why the store stopped answering; then nothing more is sent
        settle_open_runs(self.client, plan, self.uri)
        name = f"{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if variant := self.tracking.tags.get(SWEEP_VARIANT_TAG):
            name += f" [{variant}]"  # a sweep's variants tell apart in the runs table
        tags = {**self._common_tags(), "posttrain.role": "pipeline", "posttrain.command": _command(),
                "mlflow.note.content": self._parent_note()}
        self.parent_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        self.parent_record = os.path.join(plan.run_dir, RUN_FILE)
        update_record(self.parent_record, run_id=self.parent_id, tracking_uri=self.uri,
                      experiment_id=self.experiment_id, role="pipeline", status="RUNNING", synced=False)
        where = (f"{self.uri}/{self._run_link(self.parent_id)}" if self.uri.startswith("http")
                 else f"view it with `mlflow ui --backend-store-uri {self.uri}`")
        print(f"tracking: MLflow run {name} in experiment '{self.tracking.experiment}'; {redact(where)}", flush=True)
        self.store.params(self.parent_id, loggable_params(plan.config))
        self.store.texts(self.parent_id, {"config.yaml": yaml.safe_dump(redact(plan.config), sort_keys=False),
                                          **artifacts})

    # ------------------------------------------------------------------ what runs carry

    def _common_tags(self) -> dict[str, str]:
        tags = {
            "posttrain.pipeline": self.plan.name,
            "posttrain.run_dir": self.plan.run_dir,
            "posttrain.version": posttrain_version(),
            "mlflow.user": getpass.getuser(),
            "mlflow.source.name": "posttrain",
            "mlflow.source.type": "LOCAL",
            **self.tracking.tags,
        }
        if self.commit:
            tags["posttrain.git_commit"] = self.commit
            tags["mlflow.source.git.commit"] = self.commit.removesuffix("-dirty")
        return tags

    def _parent_note(self) -> str:
        lines = [f"Pipeline **{self.plan.name}**, run_dir `{self.plan.run_dir}`.", "", "| stage | type | upstream |",
                 "|---|---|---|"]
        for stage in self.plan.stages:
            lines.append(f"| {stage.name} | {stage.type} | {', '.join(stage.upstream) or '-'} |")
        lines += ["", "Artifacts: `dag.svg` (picture), `plan.txt`, `config.yaml` (resolved), `summary.json`."]
        return "\n".join(lines)

    def _run_link(self, run_id: str) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{run_id}"

    def _warn(self, what: str, err: BaseException) -> None:
        """Report a failed call; when the store no longer answers at all, stop calling it."""
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"tracking: could not {what} ({type(err).__name__}: {first[:300]}); training goes on",
              file=sys.stderr, flush=True)
        if self.lost is None and not self._reachable():
            self.lost = f"{type(err).__name__}: {first[:200]}"
            print(f"tracking: LOST the MLflow store at {redact(self.uri)}; the pipeline goes on without tracking. "
                  f"What each run should say is kept in {RUN_FILE} in run_dir and the stage folders; the next "
                  f"run that reaches the store ends the runs left RUNNING there.", file=sys.stderr, flush=True)

    def _reachable(self) -> bool:
        try:
            preflight(self.uri)
        except TrackingError:
            return False
        return True

    def _stage_tags(self, stage: PlannedStage) -> dict[str, Any]:
        spec = stage.spec
        tags: dict[str, Any] = {
            **self._common_tags(),
            "mlflow.parentRunId": self.parent_id,
            "posttrain.role": "stage",
            "posttrain.stage": stage.name,
            "posttrain.stage_type": stage.type,
            "posttrain.stage_dir": stage.stage_dir,
            "posttrain.output_dir": spec.model_dir,
            "posttrain.fingerprint": spec.fingerprint,
            "posttrain.upstream": ",".join(stage.upstream),
            "posttrain.command": " ".join(stage.command),
        }
        for up in stage.upstream:
            tags[f"posttrain.upstream.{up}.run_id"] = self._producer(up)
            tags[f"posttrain.upstream.{up}.output_dir"] = self.plan.stage(up).spec.model_dir
        for role in ("policy", "reference"):
            ref = getattr(spec, role)
            if ref:
                tags[f"posttrain.input.{role}"] = ref.path
                tags[f"posttrain.input.{role}_from"] = ref.ref
        if "model" in spec.inputs():
            tags["posttrain.input.model"] = spec.inputs()["model"]
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
            lines.append(f"- upstream {link}: `{self.plan.stage(up).spec.model_dir}`")
        for entry in data_identities(stage.spec):
            lines.append(f"- data ({entry['group']}): `{entry['path']}` {entry['digest']}")
        lines.append(f"- output: `{stage.spec.model_dir}`")
        return "\n".join(lines)

    def _producer(self, name: str) -> str | None:
        """The run that built stage `name`'s outputs: this invocation's, or the one recorded on disk."""
        if name in self.produced_by:
            return self.produced_by[name]
        stage = self.plan.stage(name)
        if stage.external:
            return None
        record = read_json(stage.dir / RUN_FILE) or {}
        return record.get("run_id") if record.get("tracking_uri") == self.uri else None

    def _resumable(self, stage: PlannedStage) -> str | None:
        """The run of an interrupted attempt this stage continues (same store, fingerprint, a checkpoint)."""
        record = read_json(stage.dir / RUN_FILE)
        if not record or record.get("tracking_uri") != self.uri or record.get("experiment_id") != self.experiment_id:
            return None
        if not stage.spec.resume_from or record.get("fingerprint") != stage.spec.fingerprint:
            return None
        with contextlib.suppress(Exception):
            run = self.client.get_run(record["run_id"])
            if run.info.lifecycle_stage == "active":
                return run.info.run_id
        return None

    # ------------------------------------------------------------------ stages

    def stage_env(self, stage: PlannedStage) -> dict[str, str]:
        """Create (or reopen) the stage's run; the returned env makes the stage process log into it."""
        if self.lost:
            return {"POSTTRAIN_TRACKING": "off"}
        try:
            run_id = self._resumable(stage)
            tags = self._stage_tags(stage)
            if run_id:
                previous = self.client.get_run(run_id).data.tags.get("mlflow.parentRunId")
                self.client.update_run(run_id, status="RUNNING")
                tags["posttrain.resumed"] = "true"
                tags["posttrain.previous_parent_run_id"] = previous
            else:
                earlier = (read_json(stage.dir / RUN_FILE) or {}).get("run_id")
                run_id = self.client.create_run(self.experiment_id, run_name=stage.name, tags={
                    "mlflow.parentRunId": self.parent_id}).info.run_id
                tags["posttrain.previous_attempt_run_id"] = earlier
                spec = {k: v for k, v in stage.spec.to_dict().items() if k not in UNLOGGED_SPEC_KEYS}
                self.store.params(run_id, loggable_params(spec, prefix="stage"))
                self.store.datasets(run_id, data_identities(stage.spec))
            tags["mlflow.note.content"] = self._stage_note(stage)
            self.store.tags(run_id, tags)
            write_json(stage.dir / RUN_FILE, {
                "run_id": run_id, "tracking_uri": self.uri, "experiment_id": self.experiment_id,
                "parent_run_id": self.parent_id, "fingerprint": stage.spec.fingerprint, "status": "RUNNING",
                "synced": False,
            })
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn(f"create the MLflow run of stage '{stage.name}'", err)
            return {"POSTTRAIN_TRACKING": "off"}  # the stage must not start a stray run of its own
        self.running[stage.name] = run_id
        self.produced_by[stage.name] = run_id
        return {"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": self.uri,
                "MLFLOW_EXPERIMENT_NAME": str(self.tracking.experiment)}  # the HTTP bounds: in os.environ

    def stage_end(self, stage: PlannedStage, result: StageResult) -> None:
        """Artifacts, final metrics and the true status of the stage's run; its summary on the parent."""
        self.statuses[stage.name] = result.status
        if self.lost:
            run_id = self.running.pop(stage.name, None)
            if run_id and RUN_STATUS.get(result.status):
                update_record(stage.dir / RUN_FILE, status=RUN_STATUS[result.status], synced=False)
            return
        try:
            self.store.tags(self.parent_id, {f"posttrain.status.{stage.name}": result.status.value})
            if result.status == Status.CACHED:
                self._cached(stage, result)
            # a submitted stage's run stays ours to end if this invocation follows its job later
            run_id = self.running.get(stage.name) if result.status in PENDING else self.running.pop(stage.name, None)
            if run_id:
                self._end_stage_run(stage, result, run_id)
            params, numbers = split_constants(result.metrics, prefix=stage.name)
            self.store.params(self.parent_id, params)
            if numbers:
                self.store.metrics(self.parent_id, metric_items(stage.name, numbers))
            if result.wall_seconds:
                self.store.metrics(self.parent_id, {mlflow_name(f"{stage.name}.wall_seconds"): result.wall_seconds})
        except Exception as err:  # noqa: BLE001
            self._warn(f"log the end of stage '{stage.name}'", err)
            if RUN_STATUS.get(result.status):  # the store did not take the end: keep it for the next run
                update_record(stage.dir / RUN_FILE, status=RUN_STATUS[result.status], synced=False)

    def _end_stage_run(self, stage: PlannedStage, result: StageResult, run_id: str) -> None:
        folder = stage.dir
        files = {}
        if (folder / STAGE_YAML).is_file():
            files[STAGE_YAML] = yaml.safe_dump(redact(yaml.safe_load((folder / STAGE_YAML).read_text())),
                                               sort_keys=False)
        for name in (STAGE_LOG, MANIFEST):
            if (folder / name).is_file():
                files[name] = (folder / name).read_text(errors="replace")
        if files:
            self.store.texts(run_id, files)
        manifest = read_json(folder / MANIFEST) or {}
        models = list(manifest.get("models") or {})  # a stage that compared models (keys.py)
        logged = self.client.get_run(run_id).data
        params, numbers = split_constants(result.metrics)
        self.store.params(run_id, {k: v for k, v in params.items() if k not in logged.params})
        named = by_metric(eval_beside_training(numbers), models)  # as the stage process logged them
        missing = {k: v for k, v in metric_items("", named).items() if k not in logged.metrics}
        step = int(result.metrics.get("global_step", 0) or 0)
        self.store.metrics(run_id, {**missing, "wall_seconds": result.wall_seconds}, step=step)
        self._model_runs(stage, run_id, per_model(numbers, models), manifest.get("models") or {})
        self.store.tags(run_id, {"posttrain.status": result.status.value, "posttrain.reason": result.reason or None})
        if self.tracking.register == stage.name and result.status == Status.COMPLETED:
            register_model(self.store, self.plan.name, stage, run_id, self.tracking.registered_model)
        status = RUN_STATUS.get(result.status)
        if status:  # any other status (a job queued on a scheduler): the stage ends its run itself
            self.client.set_terminated(run_id, status)
        update_record(folder / RUN_FILE, status=status or result.status.value, synced=True,
                      manifest_finished_at=manifest.get("finished_at"))

    def _model_runs(self, stage: PlannedStage, run_id: str, results: dict[str, dict[str, float]],
                    paths: dict[str, str]) -> None:
        """A child run per model the stage compared, with plain metric names (keys.py)."""
        for label, metrics in results.items():
            child = self.client.create_run(self.experiment_id, run_name=f"{stage.name}/{label}", tags={
                **self._common_tags(), "mlflow.parentRunId": run_id, "posttrain.role": "model",
                "posttrain.stage": stage.name, "posttrain.model": label, "posttrain.model_path": str(paths.get(label))})
            self.store.metrics(child.info.run_id, metric_items("", metrics))
            self.client.set_terminated(child.info.run_id, "FINISHED")

    def _cached(self, stage: PlannedStage, result: StageResult) -> None:
        """A child run that says `cached` and points at the run that built the model (if known)."""
        record = read_json(stage.dir / RUN_FILE) or {}
        manifest = read_json(stage.dir / MANIFEST) or {}
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
        self.store.tags(run_id, tags)
        params, numbers = split_constants(result.metrics)
        self.store.params(run_id, params)
        if numbers:
            self.store.metrics(run_id, metric_items("", eval_beside_training(numbers)))
        if self.tracking.register == stage.name:
            register_model(self.store, self.plan.name, stage, run_id, self.tracking.registered_model)
        self.client.set_terminated(run_id, "FINISHED")
        self.produced_by[stage.name] = source or run_id

    # ------------------------------------------------------------------ the end

    def log_summary(self, path: str) -> None:
        if self.lost:
            return
        try:
            self.client.log_artifact(self.parent_id, path)
        except Exception as err:  # noqa: BLE001
            self._warn("log summary.json", err)

    def close(self, status: str | None = None, pictures: Pictures | None = None) -> None:
        """End what is still open: stage runs as KILLED/FAILED on an abort; the parent with the
        pipeline's status (`status` overrides it: KILLED on Ctrl-C or SIGTERM)."""
        if self.closed:
            return
        self.closed = True
        final = status or self._pipeline_status()
        for name in self.running if status else ():  # aborted while these stages ran
            self.statuses[name] = Status.INTERRUPTED
            update_record(self.plan.stage(name).dir / RUN_FILE, status=status, synced=False)
        update_record(self.parent_record, status=final or "pending", synced=final is None)
        if self.lost:
            print("tracking: this invocation's MLflow runs stay RUNNING until the next run that reaches the store",
                  file=sys.stderr, flush=True)
            return
        try:
            for name, run_id in list(self.running.items()) if status else ():
                self.client.set_terminated(run_id, status)
                self.store.tags(run_id, {"posttrain.status": Status.INTERRUPTED.value})
                self.store.tags(self.parent_id, {f"posttrain.status.{name}": Status.INTERRUPTED.value})
                update_record(self.plan.stage(name).dir / RUN_FILE, synced=True)
            self.running.clear()
            if pictures:
                self.store.texts(self.parent_id, pictures({k: v.value for k, v in self.statuses.items()}))
            if final:
                self.client.set_terminated(self.parent_id, final)
                update_record(self.parent_record, synced=True)
        except Exception as err:  # noqa: BLE001
            self._warn("end the pipeline's MLflow run", err)

    def _pipeline_status(self) -> str | None:
        """FINISHED when every stage is done, None (stay RUNNING) while some are queued elsewhere."""
        values = set(self.statuses.values())
        if values & set(PENDING):
            return None
        if Status.INTERRUPTED in values:
            return "KILLED"
        if values <= DONE:
            return "FINISHED"
        return "FAILED"  # failed, skipped, gated: the pipeline did not deliver every stage


def _command() -> str:
    return shlex.join(redact(["python", "-m", "workflows.run", *sys.argv[1:]]))  # each `key=value` checked


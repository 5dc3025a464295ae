"""MLflow tracking of one pipeline invocation: a parent run, and a nested run per stage.

What lands where (experiment = `tracking.experiment`, default the pipeline's name):
- parent run `<pipeline>-<YYYYmmdd-HHMMSS>`: params = the resolved pipeline config, flattened and
  redacted; artifacts config.yaml, plan.txt, dag.md (mermaid), dag.svg, summary.json; a metric
  `<stage>.<metric>` per stage's final metric (`sft.train_loss`, `dpo.rewards/accuracies`);
  tags `posttrain.status.<stage>`, the git commit, run_dir, posttrain's version.
- a child run per stage that runs, named after it (`mlflow.parentRunId` = the parent): params
  `stage.*` = its stage.yaml; lineage tags `posttrain.upstream.<name>.run_id`, `posttrain.input.*`
  (model dirs), `posttrain.data.*` (dataset paths and digests, also as MLflow dataset inputs),
  `posttrain.output_dir`; artifacts stage.yaml, stage.log, manifest.json. The stage process logs
  its training metrics into it (stages/tracking.py, `MLFLOW_RUN_ID`, rank 0 only).
- a stage that resumes an interrupted attempt (same fingerprint, `resume_from`) continues that
  attempt's run, moved under the new parent; <stage_dir>/mlflow_run.json remembers it.
- a cached stage gets a small child run tagged `posttrain.cached=true` whose
  `posttrain.source_run_id` is the run that built the model; lineage tags of downstream stages
  always name the run that produced their inputs. Given models and skipped stages get no run.

The mlflow import happens only when a tracked pipeline starts (never on dry_run or tracking=none).
A tracking failure after the start is reported and training goes on: losing a metric is cheaper
than losing a run.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from workflows.mlflow_tracker import MlflowTracker
    from workflows.plan import Plan, PlannedStage
    from workflows.report import StageResult

PREFLIGHT_TIMEOUT = 5.0  # seconds per HTTP try; the whole check stays under 10 s


class TrackingError(Exception):
    """Tracking cannot start (server unreachable, bad store, deleted experiment): nothing ran."""


class Tracker(Protocol):
    """What a launcher tells the tracker; every method is cheap and never raises."""

    def on_stage_start(self, stage: PlannedStage) -> dict[str, str]: ...  # env for the stage process

    def on_stage_end(self, stage: PlannedStage, result: StageResult) -> None: ...


class NullTracker:
    """tracking=none: nothing is logged and mlflow is never imported."""

    def on_stage_start(self, stage: PlannedStage) -> dict[str, str]:
        return {}

    def on_stage_end(self, stage: PlannedStage, result: StageResult) -> None:
        pass

    def log_summary(self, path: str) -> None:
        pass

    def close(self, status: str | None = None) -> None:
        pass


def settings(plan: Plan) -> dict[str, Any]:
    """The resolved tracking config (absolute sqlite path, experiment name) the planner put in every spec."""
    for stage in plan.stages:
        if stage.spec.get("tracking"):
            return stage.spec["tracking"]
    return {"backend": "none"}


def _server_error(uri: str, why: str) -> TrackingError:
    return TrackingError(
        f"tracking server {uri} is not reachable ({why}). Start it (e.g. `mlflow server --host 127.0.0.1 "
        f"--port 5000`), fix tracking.uri, or run with tracking=none. No stage was started."
    )


def preflight(uri: str, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Check the store before any stage starts: an HTTP server must answer MLflow's REST API; a
    SQLite file must be creatable. Plain urllib: answering fast matters more than importing mlflow.

    Raises:
        TrackingError: naming the URI, what went wrong and what to do.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        request = urllib.request.Request(url, headers=_auth_headers())
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(1)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                return  # reachable; the credentials are MLflow's to check (MLFLOW_TRACKING_* env)
            raise TrackingError(
                f"tracking server {uri} answered HTTP {err.code} to {url}: is it an MLflow tracking server? "
                f"Fix tracking.uri or run with tracking=none. No stage was started."
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise _server_error(uri, str(getattr(err, "reason", err))) from None
    elif parsed.scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"tracking.uri {uri}: cannot create {db.parent} ({err.strerror}); "
                                f"choose a writable path or run with tracking=none") from None
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(f"tracking.uri {uri}: {db} is not writable; choose another path or tracking=none")


def _auth_headers() -> dict[str, str]:
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        import base64

        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def start(plan: Plan) -> MlflowTracker | NullTracker:
    """The tracker for this invocation, after checking the store.

    Raises:
        TrackingError: the store is unreachable or unusable; nothing was started.
    """
    tracking = settings(plan)
    if tracking.get("backend", "none") == "none":
        return NullTracker()
    if tracking["backend"] != "mlflow":
        raise TrackingError(f"tracking.backend: '{tracking['backend']}' is not one of mlflow, none")
    if all(stage.external or stage.reason == "cached" for stage in plan.stages):
        # Nothing will train: the runs that produced these stages already hold their metrics, and
        # skipping MLflow (a ~5 s import and a store round-trip) keeps a cached re-run near 1 s.
        print("tracking: every stage is cached; no new MLflow runs (see the runs that trained them)")
        return NullTracker()
    preflight(tracking["uri"])
    from workflows.mlflow_tracker import MlflowTracker

    try:
        return MlflowTracker(plan, tracking)
    except TrackingError:
        raise
    except Exception as err:  # noqa: BLE001 - a store that fails its first call: stop before training
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TrackingError(f"could not start MLflow tracking at {tracking['uri']}: {first}. "
                            f"Fix tracking.uri or run with tracking=none. No stage was started.") from None


@contextlib.contextmanager
def tracked(plan: Plan) -> Iterator[MlflowTracker | NullTracker]:
    """`with tracked(plan) as tracker: launcher.run(plan, tracker)`; statuses stay true on any exit.

    Raises:
        TrackingError: on entry, when tracking cannot start.
    """
    tracker = start(plan)
    try:
        yield tracker
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into one by workflows/run.py
        tracker.close("KILLED")
        raise
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()

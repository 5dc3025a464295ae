"""The stage process's side of MLflow tracking: log into the run the orchestrator made, rank 0 only.

The orchestrator (posttrain/tracking/mlflow/pipeline.py) creates the stage's run and passes its id in
`MLFLOW_RUN_ID`. Here rank 0 opens that run before the Trainer exists, so Hugging Face's
MLflowCallback logs into the active run instead of starting its own: HF ends the run it starts at
`on_train_end`, and the final `trainer.evaluate()` would then open a second, stray run (mlflow's
`start_run` consumes `MLFLOW_RUN_ID` on first use). Every other rank gets `report_to="none"` and
never imports mlflow, so an N-process stage makes exactly one run.

The run ends with a true status even with no orchestrator watching (a Slurm job): FINISHED when
the stage wrote its manifest, KILLED when it stopped on a signal (stages/lib/interrupt.py), FAILED
otherwise. The orchestrator, when it waits, sets the same status after the process exits.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

from posttrain import stop
from posttrain.artifacts import MANIFEST
from posttrain.spec import StageSpec
from posttrain.tracking.mlflow.keys import eval_beside_training

_run: dict[str, Any] = {}  # the run this process opened: {"id", "stage_dir"}


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def report_to(spec: StageSpec) -> str | list[str]:
    """TRL/Trainer `report_to` for this stage, after attaching rank 0 to the stage's MLflow run."""
    if not _main_process():
        os.environ.pop("MLFLOW_RUN_ID", None)
        return "none"
    return ["mlflow"] if attach(spec) else "none"


def attach(spec: StageSpec) -> str | None:
    """Open the stage's MLflow run in this process (rank 0); returns its id, or None when this
    process does not log. Idempotent; never raises (a tracking failure must not stop training).

    With `MLFLOW_RUN_ID` (set by the orchestrator) it continues that run; without (a stage started
    by hand) it starts a run named after the stage in the configured experiment.
    `POSTTRAIN_TRACKING=off` (the orchestrator could not make the run) turns logging off.
    """
    if spec.tracking.backend != "mlflow" or not _main_process() or os.environ.get("POSTTRAIN_TRACKING") == "off":
        return None
    if _run:
        return _run["id"]
    try:
        return _start(spec)
    except Exception as err:  # noqa: BLE001
        print(f"[{spec.name}] tracking: could not open the MLflow run ({type(err).__name__}: {err}); "
              f"training goes on without it", file=sys.stderr, flush=True)
        return None


def _start(spec: StageSpec) -> str:
    os.environ.setdefault("MLFLOW_TRACKING_URI", str(spec.tracking.uri))
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", str(spec.tracking.experiment))
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = os.environ.pop("MLFLOW_RUN_ID", None)  # HF's callback must see an active run, not an id
    if run_id:
        run = mlflow.start_run(run_id=run_id)
    else:
        mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
        run = mlflow.start_run(run_name=spec.name, tags={"posttrain.stage": spec.name,
                                                        "posttrain.stage_type": spec.type})
    _run.update(id=run.info.run_id, stage_dir=spec.stage_dir)
    # atexit runs last-registered first: this ends the run before mlflow's own handler (FINISHED).
    atexit.register(_end_run)
    return run.info.run_id




def _end_run() -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    if (Path(_run["stage_dir"]) / MANIFEST).is_file():
        status = "FINISHED"  # the manifest is written last: the stage did its work
    elif stop.requested() or isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        status = "KILLED"
    else:
        status = "FAILED"
    try:
        mlflow.end_run(status)
    except Exception as err:  # noqa: BLE001 - the process is exiting; the orchestrator sets it again
        print(f"tracking: could not end the MLflow run ({err})", file=sys.stderr)


def curves_first(trainer: Any) -> None:
    """Give Hugging Face's MLflowCallback the held-out metrics under their training curve's section
    (`eval_rewards/accuracies` -> `rewards/eval_accuracies`, keys.py), so a run evaluated once at
    the end does not open on one-point `eval_*` sections that sort before every curve."""
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ != "MLflowCallback":
            continue
        original = callback.on_log

        def on_log(args: Any, state: Any, control: Any, logs: dict | None = None, _log: Any = original,
                   **kwargs: Any) -> Any:
            return _log(args, state, control, logs=eval_beside_training(logs) if logs else logs, **kwargs)

        callback.on_log = on_log


def log_table(spec: StageSpec, name: str, columns: dict[str, list[Any]]) -> None:
    """A table (column -> values) as a JSON artifact of the stage's run; never raises."""
    if not attach(spec):
        return
    try:
        import mlflow

        mlflow.log_table(columns, artifact_file=name)
    except Exception as err:  # noqa: BLE001 - tracking must never fail a stage that did its work
        print(f"[{spec.name}] tracking: could not log {name} ({type(err).__name__}: {err})", flush=True)


def log_artifact(spec: StageSpec, path: str, folder: str | None = None) -> None:
    if not attach(spec):
        return
    try:
        import mlflow

        mlflow.log_artifact(path, artifact_path=folder)
    except Exception as err:  # noqa: BLE001
        print(f"[{spec.name}] tracking: could not log {path} ({type(err).__name__}: {err})", flush=True)

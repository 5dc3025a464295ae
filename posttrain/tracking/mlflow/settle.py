"""Runs an earlier invocation left RUNNING, ended with their true status by the next one that reaches the store.

The truth is kept on disk, beside what it describes: `<run_dir>/mlflow_run.json` for the pipeline's
parent run and `<stage_dir>/mlflow_run.json` for each stage's run, with the status the orchestrator
knew and `synced`, whether the store has it too. A record stays unsynced when the store was lost
mid-run (server killed, network down) or the orchestrator itself died (`kill -9`): its status is
then RUNNING, and the run is ended KILLED. Holding run_dir's lock, the next invocation knows no
other one is alive on it, so every unsynced run of its run_dir is stale. Runs still owned by a
scheduler (`submitted`, `pending`) are left alone: the stage job ends its own run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from posttrain.jsonio import read_json, write_json
from posttrain.pipeline import Plan
from posttrain.tracking.redact import redact

RUN_FILE = "mlflow_run.json"  # in run_dir (the pipeline's run) and in each stage dir (that stage's attempt)
FINAL = ("FINISHED", "FAILED", "KILLED")


def update_record(path: str | Path, **updates: Any) -> None:
    """Update a run record on disk; never raises (a full disk must not stop the pipeline)."""
    try:
        write_json(path, {**(read_json(path) or {}), **updates})
    except OSError:
        pass


def unsettled(plan: Plan, uri: str) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) of every run of this run_dir on store `uri` whose end the store does not know."""
    paths = [Path(plan.run_dir) / RUN_FILE, *(stage.dir / RUN_FILE for stage in plan.stages if not stage.external)]
    out = []
    for path in paths:
        data = read_json(path)
        if not data or data.get("tracking_uri") != uri or not data.get("run_id"):
            continue
        status = data.get("status")
        synced = data.get("synced", status != "RUNNING")  # records of older posttrains: RUNNING = orphaned
        if not synced and status in (*FINAL, "RUNNING"):
            out.append((path, data))
    return out


def settle(client: Any, plan: Plan, uri: str) -> list[str]:
    """End every unsettled run with its recorded status (RUNNING: KILLED); the names of those ended.

    Raises:
        Exception: whatever the MLflow client raises (the caller warns and goes on).
    """
    ended = []
    for path, data in unsettled(plan, uri):
        status = data["status"] if data["status"] in FINAL else "KILLED"
        run = client.get_run(data["run_id"])
        if run.info.status == "RUNNING":
            why = ("its orchestrator stopped before the run ended" if data["status"] == "RUNNING"
                   else "the tracking store was unreachable when the run ended")
            client.set_tag(data["run_id"], "posttrain.settled", f"{status} by a later invocation: {why}")
            client.set_terminated(data["run_id"], status)
            ended.append(f"{run.info.run_name} {status}")
        update_record(path, status=status, synced=True)
    return ended


def settle_open_runs(client: Any, plan: Plan, uri: str) -> None:
    """`settle`, reported on the console; a failure is a warning (this invocation's tracking goes on)."""
    try:
        ended = settle(client, plan, uri)
    except Exception as err:  # noqa: BLE001 - a deleted run, a store that fails: not a reason to stop
        print(f"tracking: could not end the runs an earlier invocation left open ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''})", file=sys.stderr, flush=True)
        return
    if ended:
        print(f"tracking: ended {len(ended)} run(s) an earlier invocation left open: {', '.join(ended)}", flush=True)


def run_link(stage_dir: str) -> str | None:
    """The stage's latest run (<stage_dir>/mlflow_run.json): its page on a tracking server, else its id and store."""
    record = read_json(os.path.join(stage_dir, RUN_FILE)) or {}
    run_id, uri = record.get("run_id"), str(record.get("tracking_uri") or "")
    if not run_id:
        return None
    if uri.startswith("http"):
        return redact(f"{uri.rstrip('/')}/#/experiments/{record.get('experiment_id')}/runs/{run_id}")
    return redact(f"run {run_id} in {uri} (mlflow ui --backend-store-uri {uri})")

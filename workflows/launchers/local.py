"""Run every stage as a child process on this machine, in DAG order.

A failed stage stops only the stages downstream of it; independent branches still run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

import yaml

from workflows import gates
from workflows.fingerprint import prepare_stage_dir
from workflows.lock import held_fds
from workflows.paths import ROOT
from workflows.plan import Plan, PlannedStage
from workflows.report import StageResult, stage_inputs
from workflows.tracking import NullTracker, Tracker

DONE = ("completed", "cached", "given")
INTERRUPTED_EXIT_CODE = 143  # a stage that saved a checkpoint on SIGTERM/USR1 (stages/interrupt.py)


def default_stage_env() -> dict[str, str]:
    """Variables every stage process gets unless the environment already sets them (any launcher)."""
    return {
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # One line per logging step comes from stages/common.py; progress bars would flood stage.log.
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",  # TRL's reference log-prob precompute bar
        "PYTHONWARNINGS": "ignore::FutureWarning",
        # DeepSpeed JIT-compiles small ops on first use (~30 s); compiled once per machine, not per run.
        "TORCH_EXTENSIONS_DIR": os.path.join(os.path.expanduser("~"), ".cache", "posttrain", "torch_extensions"),
    }


def stage_env(plan: Plan) -> dict[str, str]:
    """The environment of a stage process: ours, plus what makes `python -m stages.x` importable."""
    env = dict(os.environ)
    if (ROOT / "stages").is_dir():  # a checkout: make `stages` importable from any working dir
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for key, value in default_stage_env().items():
        env.setdefault(key, value)
    env.update({k: str(v) for k, v in (plan.config["launcher"].get("env") or {}).items()})
    return env


def write_stage_config(stage: PlannedStage) -> None:
    os.makedirs(stage.stage_dir, exist_ok=True)
    with open(stage.config_path, "w") as f:
        yaml.safe_dump(stage.spec, f, sort_keys=False)


def read_manifest(stage: PlannedStage) -> dict | None:
    path = os.path.join(stage.stage_dir, "manifest.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _run_process(stage: PlannedStage, env: dict[str, str], echo: bool) -> tuple[int, list[str]]:
    """Run the stage's command, teeing its output to stage.log (and the console). Returns (code, tail)."""
    log_path = os.path.join(stage.stage_dir, "stage.log")
    tail: deque[str] = deque(maxlen=15)
    with open(log_path, "a") as log:
        # pass_fds: the stage holds the run_dir lock too, even if this process is killed
        proc = subprocess.Popen(stage.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True, pass_fds=held_fds())
        try:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip())
                if echo:
                    sys.stdout.write(line if line.startswith(f"[{stage.name}]") else f"[{stage.name}] {line}")
                    sys.stdout.flush()
            return proc.wait(), list(tail)
        except KeyboardInterrupt:
            # SIGTERM lets the trainer save a checkpoint and stop (stages/interrupt.py); a stage that ignores
            # it is killed. Its last lines (which checkpoint it saved) still go to stage.log and the console.
            def last_words() -> None:
                for line in proc.stdout:
                    log.write(line)
                    sys.stdout.write(line)

            os.killpg(proc.pid, signal.SIGTERM)
            drain = threading.Thread(target=last_words, daemon=True)
            drain.start()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            drain.join(5)
            raise


def run_stage(plan: Plan, stage: PlannedStage, env: dict[str, str]) -> StageResult:
    result = StageResult(stage.name, stage.type, "completed", stage.spec["model_dir"], stage_inputs(stage))
    prepare_stage_dir(stage)  # not done until it writes its manifest; stale outputs cleared unless resuming
    write_stage_config(stage)
    print(f"==> {stage.name} [{stage.type}] ({stage.reason})", flush=True)
    start = time.time()
    code, tail = _run_process(stage, env, plan.config["launcher"].get("stream_logs", True))
    result.wall_seconds = round(time.time() - start, 2)
    result.extra["log"] = os.path.join(stage.stage_dir, "stage.log")
    manifest = read_manifest(stage)
    if code == INTERRUPTED_EXIT_CODE and manifest is None:
        result.status = "interrupted"
        result.reason = "stopped on request after saving a checkpoint; run the same command again to resume"
    elif code != 0 or manifest is None:
        result.status = "failed"
        why = f"exit code {code}" if code != 0 else "exited without writing its manifest"
        result.reason = f"{why}; see {result.extra['log']}"
        print(f"==> {stage.name} failed ({why}); last lines of its log:\n    " + "\n    ".join(tail), file=sys.stderr)
    else:
        result.metrics = manifest.get("metrics", {})
    return result


def run(plan: Plan, tracker: Tracker | None = None) -> list[StageResult]:
    env = stage_env(plan)
    tracker = tracker or NullTracker()
    results: dict[str, StageResult] = {}
    for stage in plan.stages:
        if stage.external:
            results[stage.name] = StageResult(stage.name, stage.type, "given", stage.spec["model_dir"],
                                              stage_inputs(stage), reason="model given by path or hub id")
            continue
        if stage.reason == "cached":  # its manifest carries the current fingerprint: start nothing
            manifest = read_manifest(stage) or {}
            results[stage.name] = StageResult(stage.name, stage.type, "cached", stage.spec["model_dir"],
                                              stage_inputs(stage), metrics=manifest.get("metrics", {}))
            tracker.on_stage_end(stage, results[stage.name])
            continue
        blocked = [u for u in stage.upstream if results[u].status not in DONE]
        if blocked:
            results[stage.name] = StageResult(stage.name, stage.type, "skipped", stage.spec["model_dir"],
                                              stage_inputs(stage), reason=f"upstream '{blocked[0]}' {results[blocked[0]].status}")
            tracker.on_stage_end(stage, results[stage.name])
            continue
        if gated := gates.stop(stage, results):  # an upstream metric is out of the stage's gate bounds
            results[stage.name] = gated
            tracker.on_stage_end(stage, gated)
            continue
        results[stage.name] = run_stage(plan, stage, {**env, **tracker.on_stage_start(stage)})
        tracker.on_stage_end(stage, results[stage.name])
    return list(results.values())

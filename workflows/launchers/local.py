"""Run every stage as a child process on this machine, in DAG order.

A failed stage stops only the stages downstream of it; independent branches still run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from posttrain import gates, stop
from posttrain.pipeline import Plan, PlannedStage, StageResult
from posttrain.status import DONE, Status
from posttrain.tracking import PipelineTracker
from workflows.launchers.env import stage_env
from workflows.launchers.lifetime import with_parent_lifetime
from workflows.launchers.stage_log import StageLog, disk_full
from workflows.report.live import Console, console_for
from workflows.state.decide import prepare_stage_dir
from workflows.state.lock import held_fds
from workflows.store.claim import claim

LOG_TAIL = 15  # lines of a failed stage's log shown on the console


def _run_process(stage: PlannedStage, env: dict[str, str], console: Console, log: StageLog) -> tuple[int, list[str]]:
    """Run the stage's command, teeing its output to stage.log and the console. Returns (code, tail)."""
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    # pass_fds: the stage holds the run_dir lock too, even if this process is killed.
    # with_parent_lifetime: the stage gets SIGTERM (checkpoint and stop) if this process dies.
    proc = subprocess.Popen(with_parent_lifetime(stage.command), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
                            pass_fds=held_fds())
    try:
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip())
            console.stage_line(stage, line)
        return proc.wait(), list(tail)
    except KeyboardInterrupt:
        # SIGTERM lets the trainer save a checkpoint and stop (stages/lib/interrupt.py); a stage that ignores
        # it is killed. Its last lines (which checkpoint it saved) still go to stage.log and the console.
        def last_words() -> None:
            for line in proc.stdout:
                log.write(line)
                console.stage_last_words(stage, line)

        os.killpg(proc.pid, signal.SIGTERM)
        drain = threading.Thread(target=last_words, daemon=True)
        drain.start()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        drain.join(5)
        raise


def run_stage(plan: Plan, stage: PlannedStage, env: dict[str, str], console: Console) -> StageResult:
    try:
        prepare_stage_dir(stage)  # not done until it writes its manifest; stale outputs cleared unless resuming
        stage.spec.dump(stage.dir.spec_file)
    except OSError as err:  # a full or read-only disk: the stage cannot start, the pipeline goes on
        why = f"could not write {err.filename or stage.stage_dir}: {err.strerror}"
        console.stage_failed(stage, why, [])
        return StageResult.of(stage, Status.FAILED, f"{why}; nothing was started", extra={"log": None})
    console.stage_started(stage)
    start = time.time()
    with StageLog(stage.dir.log_file) as log:
        code, tail = _run_process(stage, env, console, log)
    result = StageResult.of(stage, Status.COMPLETED, wall_seconds=round(time.time() - start, 2))
    result.extra["log"] = str(stage.dir.log_file)
    manifest = stage.dir.read_manifest()
    if code == stop.EXIT_CODE and manifest is None:
        result.status = Status.INTERRUPTED
        result.reason = "stopped on request after saving a checkpoint; run the same command again to resume"
    elif code != 0 or manifest is None:
        result.status = Status.FAILED
        why = f"exit code {code}" if code != 0 else "exited without writing its manifest"
        if disk_full(stage.stage_dir, log, tail):
            why += (f"; no space left on device (ENOSPC) where {stage.stage_dir} is: free space and run the "
                    f"same command again, the stage resumes from its last complete checkpoint")
        if log.error is not None:
            why += f"; stage.log is incomplete ({log.error.strerror})"
        result.reason = f"{why}; see {result.extra['log']}"
        console.stage_failed(stage, why, tail)
    else:
        result.metrics = manifest.metrics
    return result


def cached_result(stage: PlannedStage) -> StageResult:
    manifest = stage.dir.read_manifest()
    return StageResult.of(stage, Status.CACHED, metrics=manifest.metrics if manifest else {})


def gate_result(stage: PlannedStage, results: dict[str, StageResult]) -> StageResult | None:
    """The `gated` result of a stage whose gate fails on its upstream's results, else None (it runs)."""
    gate = stage.spec.gate
    if gate is None:
        return None
    verdict = gates.judge(gate, results[gate.stage].metrics)
    print(f"==> {stage.name}: {verdict.reason}" + ("" if verdict.passed else "; not starting it"), flush=True)
    if verdict.passed:
        return None
    return StageResult.of(stage, Status.GATED, verdict.reason, extra={"gate": asdict(verdict)})


class LocalLauncher:
    rendezvous = None  # one machine: no multi-node stages

    def problems(self, cfg: dict[str, Any], stages: dict[str, dict[str, Any]]) -> list[str]:
        return []  # the cluster settings (conf/local/ may hold a cluster's) do not apply here

    def dry_run(self, plan: Plan) -> str:
        return ""

    def job_state(self, stage_dir: str) -> None:
        return None  # stages are child processes here: their progress.json says all there is

    def follow(self, plan: Plan, tracker: PipelineTracker, results: list[StageResult]) -> list[StageResult]:
        return results  # `run` returns when every stage has ended: nothing is left to follow

    def run(self, plan: Plan, tracker: PipelineTracker) -> list[StageResult]:
        with console_for(plan) as console:  # live on a terminal, plain lines otherwise (workflows/report/live.py)
            return self._run(plan, tracker, console)

    def _run(self, plan: Plan, tracker: PipelineTracker, console: Console) -> list[StageResult]:
        env = stage_env(plan)
        results: dict[str, StageResult] = {}
        for stage in plan.stages:
            if stage.external:
                results[stage.name] = StageResult.of(stage, Status.GIVEN, "model given by path or hub id")
                continue
            if stage.cached:  # its manifest carries the current fingerprint: start nothing
                results[stage.name] = cached_result(stage)
            elif blocked := [u for u in stage.upstream if results[u].status not in DONE]:
                results[stage.name] = StageResult.of(stage, Status.SKIPPED,
                                                     f"upstream '{blocked[0]}' {results[blocked[0]].status}")
            elif gated := gate_result(stage, results):  # an upstream metric is out of the stage's gate bounds
                results[stage.name] = gated
            else:
                with claim(plan, stage) as must_run:  # another run training the same entry: wait, then reuse
                    results[stage.name] = (run_stage(plan, stage, {**env, **tracker.stage_env(stage)}, console)
                                           if must_run else cached_result(stage))
            console.stage_ended(stage, results[stage.name])
            tracker.stage_end(stage, results[stage.name])
        return list(results.values())


LAUNCHER = LocalLauncher()

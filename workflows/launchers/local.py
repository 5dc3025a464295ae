"""Run every stage as a child process on this machine, in DAG order.

A failed stage stops only the stages downstream of it; independent branches still run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
from workflows.state.decide import prepare_stage_dir
from workflows.state.lock import held_fds
from workflows.store.claim import claim

LOG_TAIL = 15  # lines of a failed stage's log shown on the console


def _run_process(stage: PlannedStage, env: dict[str, str], echo: bool) -> tuple[int, list[str]]:
    """Run the stage's command, teeing its output to stage.log (and the console). Returns (code, tail)."""
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    with open(stage.dir.log_file, "a") as log:
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
            # SIGTERM lets the trainer save a checkpoint and stop (stages/lib/interrupt.py); a stage that ignores
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
    prepare_stage_dir(stage)  # not done until it writes its manifest; stale outputs cleared unless resuming
    stage.spec.dump(stage.dir.spec_file)
    print(f"==> {stage.name} [{stage.type}] ({stage.reason})", flush=True)
    start = time.time()
    code, tail = _run_process(stage, env, plan.config["launcher"].get("stream_logs", True))
    result = StageResult.of(stage, Status.COMPLETED, wall_seconds=round(time.time() - start, 2))
    result.extra["log"] = str(stage.dir.log_file)
    manifest = stage.dir.read_manifest()
    if code == stop.EXIT_CODE and manifest is None:
        result.status = Status.INTERRUPTED
        result.reason = "stopped on request after saving a checkpoint; run the same command again to resume"
    elif code != 0 or manifest is None:
        result.status = Status.FAILED
        why = f"exit code {code}" if code != 0 else "exited without writing its manifest"
        result.reason = f"{why}; see {result.extra['log']}"
        print(f"==> {stage.name} failed ({why}); last lines of its log:\n    " + "\n    ".join(tail), file=sys.stderr)
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

    def follow(self, plan: Plan, tracker: PipelineTracker, results: list[StageResult]) -> list[StageResult]:
        return results  # `run` returns when every stage has ended: nothing is left to follow

    def run(self, plan: Plan, tracker: PipelineTracker) -> list[StageResult]:
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
                    results[stage.name] = (run_stage(plan, stage, {**env, **tracker.stage_env(stage)}) if must_run
                                           else cached_result(stage))
            tracker.stage_end(stage, results[stage.name])
        return list(results.values())


LAUNCHER = LocalLauncher()

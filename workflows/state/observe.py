"""What a run_dir says about each of its stages now, read only from files (no lock): during a run,
after it, after a crash, for someone else's run_dir.

The sources, all written atomically: <run_dir>/plan.json (the latest invocation: its stages,
fingerprints, launcher, orchestrator pid), summary.json (what became of each stage, once the
invocation ended), and per stage manifest.json (done), progress.json (the stage process: step,
rate, pid, how it ended), checkpoints/ (where a rerun resumes), stage.log (the last error), the
launcher's job record (a scheduler's queue) and the tracker's run record (its link).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from posttrain.artifacts import FINGERPRINT_FILE, GATED_FILE, PLAN_FILE, STAGE_YAML, SUMMARY, Progress, StageDir
from posttrain.jsonio import read_json
from posttrain.pipeline import PlanRecord, StageRecord
from posttrain.progress import STEP_LINE, format_seconds, headline
from posttrain.status import Status
from posttrain.tracking import TrackingError, backend
from workflows.launchers import LAUNCHERS, JobState, launcher_for
from workflows.report.summary import HEADLINE_METRICS
from workflows.state.lock import pid_running

RUNNING, QUEUED, NOT_STARTED = "running", "queued", "not started"  # states only a live view has
ACTIVE_PHASES = ("starting", "training", "evaluating")
STALE_SECONDS = 900  # a process on another machine, with no scheduler to ask, counts as gone after this silence
ERROR_LINE = re.compile(r"^(\[[^\]]+\] )?((\w+\.)*\w*(Error|Exception|Interrupt)\b|error:|fatal:|Killed)", re.I)
LOG_TAIL_BYTES = 256 * 1024


class NotARunDir(Exception):
    """The folder holds no plan.json or summary.json: posttrain never ran there."""


@dataclass
class StageState:
    name: str
    type: str
    status: str  # a Status value, or running / queued / not started
    detail: str = ""  # one line: `step 40/100, ETA 1m20s`, the last error, `waiting for sft` ...
    upstream: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    stage_dir: str = ""
    output_dir: str = ""
    run_link: str | None = None
    step: int | None = None
    max_steps: int | None = None
    eta_seconds: float | None = None
    elapsed_seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the latest (running) or final values
    error: str | None = None
    resume_from: str | None = None  # the checkpoint the same command would resume from
    job: dict[str, Any] | None = None  # the scheduler's record (JobState)


@dataclass
class RunState:
    pipeline: str
    run_dir: str
    state: str  # running | finished | stopped (the orchestrator is gone and wrote no summary)
    started_at: float | None
    finished_at: float | None
    orchestrator: dict[str, Any]
    stages: list[StageState]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_dir_argument(value: str | None) -> str:
    """A command's run_dir: as given; else this directory when it is a run_dir; else the newest run_dir
    under ./outputs (where `run_dir` defaults to); else this directory (the command says what is missing)."""
    if value:
        return value

    def is_run_dir(path: str) -> bool:
        return any(os.path.isfile(os.path.join(path, name)) for name in (PLAN_FILE, SUMMARY))

    if is_run_dir("."):
        return "."
    found = os.scandir("outputs") if os.path.isdir("outputs") else []
    runs = [e.path for e in found if e.is_dir() and is_run_dir(e.path)]
    newest = max(runs, key=lambda p: max(os.path.getmtime(os.path.join(p, n)) for n in (PLAN_FILE, SUMMARY)
                                         if os.path.isfile(os.path.join(p, n))), default=None)
    if newest:
        print(f"run_dir: {newest} (the newest under ./outputs)", file=sys.stderr)
    return newest or "."


def _alive(pid: int, stage_dir: str | None = None) -> bool:
    """Is process `pid` on this machine running (and, where /proc says, running this stage)?"""
    if not pid_running(pid):
        return False
    try:
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X"):
            return False  # exited, not yet reaped (its parent was killed too)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return True
    # a reused pid runs something else: the stage's process names its stage.yaml (empty: exec'ing right now)
    spec_file = f"{os.path.basename(stage_dir.rstrip('/'))}/{STAGE_YAML}" if stage_dir else ""
    return not spec_file or not cmdline.strip() or spec_file in cmdline


def last_error(folder: StageDir, start: int = 0) -> str | None:
    """The last line of stage.log (from byte `start`: this attempt) that reads as an error, else its last line."""
    try:
        with open(folder.log_file, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - LOG_TAIL_BYTES) if start <= size else max(0, size - LOG_TAIL_BYTES))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        if ERROR_LINE.match(line):
            return line
    quiet = [line for line in lines if not STEP_LINE.match(line)]
    return quiet[-1] if quiet else None


def _resume_point(folder: StageDir, fingerprint: str | None) -> str | None:
    """The checkpoint a rerun with this fingerprint resumes (decide.py resumes the newest complete one)."""
    attempt = read_json(folder / FINGERPRINT_FILE) or {}
    if fingerprint and attempt.get("fingerprint") != fingerprint:
        return None
    complete = folder.complete_checkpoints()
    return complete[-1][1].name if complete else None


def _progress_detail(progress: Progress, now: float) -> str:
    parts = [progress.phase]
    if progress.max_steps:
        parts = [f"step {progress.step}/{progress.max_steps}"]
        eta = progress.eta_seconds(now)
        if eta is not None:
            parts.append(f"ETA {format_seconds(eta)}")
    parts += [f"{k} {v:.4g}" for k, v in headline(progress.metrics)]
    return ", ".join(parts)


def load_record(run_dir: str) -> tuple[PlanRecord, dict[str, Any] | None]:
    """The latest invocation's plan (from plan.json, else pieced together from summary.json) and its summary.

    Raises:
        NotARunDir: neither file is there.
    """
    summary = read_json(os.path.join(run_dir, SUMMARY))
    data = read_json(os.path.join(run_dir, PLAN_FILE))
    if data is not None:
        try:
            return PlanRecord.from_dict(data), summary
        except (KeyError, TypeError):
            pass
    if summary is None:
        raise NotARunDir(f"{run_dir}: no {PLAN_FILE} or {SUMMARY}; not a run_dir that posttrain ran in "
                         f"(give the run_dir of a pipeline, e.g. outputs/<pipeline>)")
    # A run_dir from before plan.json: the summary is all there is.
    stages = [StageRecord(s["name"], s.get("type", "?"), [], s.get("status", ""),
                          os.path.join(run_dir, s["name"]), s.get("output_dir", ""),
                          (read_json(os.path.join(run_dir, s["name"], "manifest.json")) or {}).get("fingerprint"),
                          s.get("status") == Status.GIVEN)
              for s in summary.get("stages", [])]
    return PlanRecord(str(summary.get("pipeline", "?")), run_dir, stages, "local", "none", 0.0, 0, ""), summary


def observe(run_dir: str, now: float | None = None) -> RunState:
    """Every stage of the latest invocation in `run_dir`, with what is known about it right now.

    Raises:
        NotARunDir: no plan.json or summary.json in `run_dir`.
    """
    now = now or time.time()
    record, summary = load_record(run_dir)
    finished = summary is not None and float(summary.get("finished_at") or 0) >= record.started_at
    results = {s["name"]: s for s in (summary or {}).get("stages", [])} if finished else {}
    here = record.host == socket.gethostname()
    orchestrator_alive = not finished and (not here or _alive(record.pid)) and record.pid > 0
    try:
        launcher = launcher_for(record.launcher) if record.launcher in LAUNCHERS else None
    except ImportError:
        launcher = None
    try:
        tracker = backend(record.tracking)
    except TrackingError:
        tracker = None
    states: dict[str, StageState] = {}
    for stage in record.stages:
        stage = replace(stage, stage_dir=_rebase(stage.stage_dir, record.run_dir, run_dir),
                        output_dir=_rebase(stage.output_dir, record.run_dir, run_dir))
        state = StageState(stage.name, stage.type, "", upstream=list(stage.upstream), fingerprint=stage.fingerprint,
                           stage_dir=stage.stage_dir, output_dir=stage.output_dir,
                           run_link=tracker.run_link(stage.stage_dir) if tracker and not stage.external else None)
        _fill(state, stage, record, results.get(stage.name), launcher, orchestrator_alive, states, now)
        states[stage.name] = state
    stages = list(states.values())
    if finished:
        overall = RUNNING if any(s.status in (RUNNING, QUEUED) for s in stages) else "finished"
    else:
        overall = RUNNING if orchestrator_alive else "stopped"
    return RunState(record.name, run_dir, overall, record.started_at or None,
                    float(summary["finished_at"]) if finished and summary.get("finished_at") else None,
                    {"pid": record.pid, "host": record.host, "alive": orchestrator_alive, "command": record.command,
                     "launcher": record.launcher}, stages)


def _rebase(path: str, recorded_run_dir: str, run_dir: str) -> str:
    """A path inside the run_dir as recorded, inside the run_dir as given (it may have been moved or copied)."""
    if recorded_run_dir and os.path.abspath(path).startswith(os.path.abspath(recorded_run_dir) + os.sep):
        return os.path.join(run_dir, os.path.relpath(os.path.abspath(path), os.path.abspath(recorded_run_dir)))
    return path


def _fill(state: StageState, stage: StageRecord, record: PlanRecord, result: dict[str, Any] | None, launcher: Any,
          orchestrator_alive: bool, earlier: dict[str, StageState], now: float) -> None:
    """Set `state`'s status and details from what the stage's folder (and its scheduler) say."""
    if stage.external:
        state.status, state.detail = Status.GIVEN.value, "model given by path or hub id"
        return
    folder = StageDir(stage.stage_dir)
    manifest = folder.read_manifest()
    if manifest is not None and (stage.fingerprint is None or manifest.fingerprint == stage.fingerprint):
        _done(state, stage, manifest, result)
        return
    progress = folder.read_progress()
    if progress is not None and progress.started_at < record.started_at:
        progress = None  # an earlier invocation's attempt
    job: JobState | None = launcher.job_state(stage.stage_dir) if launcher is not None else None
    if job is not None and not (job.queued or job.running) and 0 < job.submitted_at < record.started_at:
        job = None  # an earlier submission that has ended
    if job is not None:
        state.job = asdict(job)
    if progress is not None:
        state.step, state.max_steps = progress.step, progress.max_steps or None
        state.metrics = dict(progress.metrics)
        last = now if progress.phase in ACTIVE_PHASES else progress.updated_at
        state.elapsed_seconds = last - progress.started_at
    state.resume_from = _resume_point(folder, stage.fingerprint)
    resume = f"; the same command resumes from {state.resume_from}" if state.resume_from else ""

    if job is not None and (job.queued or job.running):
        state.status = RUNNING if job.running else QUEUED
        state.detail = _job_text(job)
        if job.running and progress is not None:
            state.detail += f"; {_progress_detail(progress, now)}"
            state.eta_seconds = progress.eta_seconds(now)
    elif progress is not None and progress.phase in ACTIVE_PHASES and job is None and _running(progress, stage, now):
        state.status, state.detail = RUNNING, _progress_detail(progress, now)
        state.eta_seconds = progress.eta_seconds(now)
    elif progress is not None:  # it started in this invocation and is no longer running
        _ended(state, progress, result, job, folder, resume)
    elif result is not None and result.get("status") and not (result["status"] == Status.SUBMITTED and job):
        state.status, state.detail = str(result["status"]), str(result.get("reason") or "")
        if state.status == Status.FAILED:
            state.error = last_error(folder)
            state.detail = "; ".join(p for p in (state.error, state.detail) if p) + resume
    elif job is not None:  # its job ended before the stage process said a word
        state.status = Status.CANCELLED.value if job.cancelled else Status.FAILED.value
        state.error = last_error(folder)
        state.detail = "; ".join(p for p in (_job_text(job), state.error) if p)
    elif (gated := read_json(folder / GATED_FILE)) and (folder / GATED_FILE).stat().st_mtime >= record.started_at:
        state.status, state.detail = Status.GATED.value, str(gated.get("reason", "gate failed"))
    elif orchestrator_alive:
        waiting = [u for u in stage.upstream if earlier.get(u) and earlier[u].status not in
                   (Status.COMPLETED, Status.CACHED, Status.GIVEN)]
        state.status = QUEUED
        state.detail = f"waiting for {', '.join(waiting)}" if waiting else "starting"
    else:
        state.status, state.detail = NOT_STARTED, "the invocation ended before it started" + resume


def _done(state: StageState, stage: StageRecord, manifest: Any, result: dict[str, Any] | None) -> None:
    cached = (result or {}).get("status") == Status.CACHED or (result is None and stage.reason == Status.CACHED)
    state.status = Status.CACHED.value if cached else Status.COMPLETED.value
    state.metrics = {k: v for k, v in manifest.metrics.items() if isinstance(v, (int, float))}
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(manifest.finished_at)) if manifest.finished_at else "?"
    wall = (result or {}).get("wall_seconds")
    state.detail = ", ".join([f"finished {when}"] + ([f"took {format_seconds(wall)}"] if wall else [])
                             + [f"{k} {state.metrics[k]:.4g}" for k in HEADLINE_METRICS if k in state.metrics])


def _job_text(job: JobState) -> str:
    return f"{job.scheduler} job {job.job_id} {job.state}" + (f" ({job.reason})" if job.reason else "")


def _ended(state: StageState, progress: Progress, result: dict[str, Any] | None, job: JobState | None,
           folder: StageDir, resume: str) -> None:
    """A stage process of this invocation that is gone: how it ended, from its own last record first."""
    outcome = (result or {}).get("status")
    if progress.phase == "interrupted" or outcome == Status.INTERRUPTED or (job and job.interrupted):
        state.status = Status.INTERRUPTED.value
        why = _job_text(job) if job else "stopped on a signal"
        state.detail = f"{why} at step {progress.step}/{progress.max_steps}{resume}"
        return
    state.error = progress.error or last_error(folder, progress.log_start)
    if progress.phase == "failed" or outcome or job is not None:
        state.status = Status.FAILED.value
        why = (result or {}).get("reason") if outcome and outcome != Status.SUBMITTED else _job_text(job) if job else ""
        state.detail = "; ".join(p for p in (state.error, why) if p) + resume
        return
    # no word from it: killed outright (kill -9, the OOM killer, a lost node)
    state.status = Status.INTERRUPTED.value if state.resume_from else Status.FAILED.value
    state.detail = (f"process {progress.pid} on {progress.host} is gone at step {progress.step}/{progress.max_steps} "
                    f"without a word (kill -9, out of memory, node lost?){resume}")


def _running(progress: Progress, stage: StageRecord, now: float) -> bool:
    if progress.host == socket.gethostname():
        return _alive(progress.pid, stage.stage_dir)
    return now - progress.updated_at < STALE_SECONDS  # another machine, no scheduler to ask: trust a recent record

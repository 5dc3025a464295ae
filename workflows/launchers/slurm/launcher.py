"""Submit every stage as its own Slurm job, all at once, chained with afterok; follow them with `wait`.

`--kill-on-invalid-dep=yes` makes Slurm cancel the dependents of a failed stage, so no job waits
forever. Stages already complete (`cached`) are not submitted and nothing waits for them. A stage
whose job from an earlier submission is still queued or running is not submitted twice: its
dependents wait for that job. With `launcher.wait=true` this follows the chain to its end.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

from posttrain import gates, stop
from posttrain.jsonio import read_json, write_json
from posttrain.pipeline import Plan, PlannedStage, StageResult
from posttrain.status import DONE, Status
from posttrain.tracking import PipelineTracker
from workflows.launchers import JobState
from workflows.launchers.slurm.jobs import ACTIVE, Job, SlurmError, job_states, run as slurm, scontrol_job
from workflows.launchers.slurm.sbatch import job_name, log_pattern, render, script_path, submit_argv
from workflows.state.decide import prepare_stage_dir, redecide
from workflows.store.claim import claim_all

JOB_FILE = "job.json"  # <stage_dir>/job.json: the latest submission of the stage


def _to_submit(plan: Plan) -> list[PlannedStage]:
    return [s for s in plan.stages if not s.external and not s.cached]


def _upstream_jobs(plan: Plan, stage: PlannedStage) -> list[str]:
    """Upstream stages that run in this invocation (the others are done: nothing to wait for)."""
    running = {s.name for s in _to_submit(plan)}
    return [u for u in stage.upstream if u in running]


def dry_run(plan: Plan) -> str:
    """The exact script of every job that would be submitted."""
    out = []
    for stage in _to_submit(plan):
        out += ["", f"==> {script_path(stage)}", render(plan, stage, _upstream_jobs(plan, stage)).rstrip()]
    return "\n".join(out) if out else "\nNothing to submit: every stage is complete."


def _result(stage: PlannedStage, status: Status, reason: str = "", **extra: object) -> StageResult:
    return StageResult.of(stage, status, reason, extra={k: v for k, v in extra.items() if v is not None})


def _read_job_record(stage: PlannedStage) -> dict | None:
    return read_json(stage.dir / JOB_FILE)


def _earlier_job(stage: PlannedStage) -> tuple[str, Job] | None:
    """The stage's job from an earlier submission, if Slurm still has it queued or running."""
    record = _read_job_record(stage)
    if record is None:
        return None
    job = scontrol_job(str(record.get("job_id")))
    if job is None or job.state not in ACTIVE:
        return None
    return record.get("fingerprint"), job


def _queued(plan: Plan) -> dict[str, str]:
    """{stage: job id} of stages still queued from an earlier submission with the same fingerprint.

    Exits with code 2 when such a job was submitted with another config: the user must choose.
    """
    reuse, conflicts = {}, []
    for stage in _to_submit(plan):
        if (earlier := _earlier_job(stage)) is None:
            continue
        fingerprint, job = earlier
        if fingerprint == stage.spec.fingerprint:
            reuse[stage.name] = job.job_id
        else:
            conflicts.append(f"stage '{stage.name}': job {job.job_id} from an earlier submission is {job.state} with "
                             f"another config; wait for it or `scancel {job.job_id}`, then submit again")
    if conflicts:
        print("error: " + "\n  ".join(["cannot submit:", *conflicts]), file=sys.stderr)
        sys.exit(2)
    return reuse


def _submit(plan: Plan, stage: PlannedStage, dependencies: list[str], env: dict[str, str]) -> str:
    prepare_stage_dir(stage, log_attempt=False)  # the job's script opens the attempt in the log when it starts
    stage.spec.dump(stage.dir.spec_file)
    os.makedirs(os.path.dirname(log_pattern(plan, stage)), exist_ok=True)  # Slurm does not create it
    path = script_path(stage)
    Path(path).write_text(render(plan, stage, _upstream_jobs(plan, stage), env))
    log = log_pattern(plan, stage)
    log_start = os.path.getsize(log) if os.path.isfile(log) else 0  # the job appends to an existing log
    job_id = slurm(submit_argv(path, dependencies)).strip().split(";")[0]
    write_json(stage.dir / JOB_FILE, {"job_id": job_id, "fingerprint": stage.spec.fingerprint, "script": path,
                                      "dependencies": dependencies, "submitted_at": time.time(), "log": log,
                                      "log_start": log_start})
    return job_id


def submit(plan: Plan, tracker: PipelineTracker) -> tuple[dict[str, str], dict[str, StageResult]]:
    """Submit the chain in topological order: ({stage: job id}, results of stages not submitted).

    The store entries of the stages to submit are held meanwhile, so another submission of the same
    entry waits and then finds this one's job (job.json in the entry) instead of submitting its own.
    The tracker makes each stage's MLflow run before its job exists; the job logs into it.

    Raises:
        SlurmError: sbatch refused a job; the jobs this call submitted are cancelled again.
    """
    with claim_all(plan, _to_submit(plan)):
        pending: set[str] = set()
        for stage in _to_submit(plan):  # finished by another run since planning: cached now
            if not redecide(plan, stage, frozenset(pending)):
                pending.add(stage.name)
        return _submit_chain(plan, tracker)


def _submit_chain(plan: Plan, tracker: PipelineTracker) -> tuple[dict[str, str], dict[str, StageResult]]:
    jobs: dict[str, str] = {}
    done: dict[str, StageResult] = {}
    reuse = _queued(plan)
    submitted: list[str] = []
    for stage in plan.stages:
        if stage.external:
            done[stage.name] = _result(stage, Status.GIVEN, "model given by path or hub id")
            continue
        if stage.cached:
            manifest = stage.dir.read_manifest()
            done[stage.name] = _result(stage, Status.CACHED)
            done[stage.name].metrics = manifest.metrics if manifest else {}
            tracker.stage_end(stage, done[stage.name])
            continue
        dependencies = [jobs[u] for u in stage.upstream if u in jobs]
        if stage.name in reuse:
            jobs[stage.name] = reuse[stage.name]
            print(f"==> {stage.name}: already queued as job {jobs[stage.name]} (submitted earlier, same config)",
                  flush=True)
            continue
        try:
            jobs[stage.name] = _submit(plan, stage, dependencies, tracker.stage_env(stage))
        except SlurmError:
            if submitted:
                slurm(["scancel", *submitted])
                print(f"==> cancelled the jobs just submitted: {' '.join(submitted)}", file=sys.stderr)
            raise
        submitted.append(jobs[stage.name])
        after = ", ".join(f"{u} (job {jobs[u]})" for u in stage.upstream if u in jobs)
        print(f"==> {stage.name}: submitted job {jobs[stage.name]} ({job_name(plan, stage)})"
              + (f" after {after}" if after else ""), flush=True)
    return jobs, done


def _seconds(job: Job) -> float:
    try:
        start, end = (datetime.fromisoformat(t) for t in (job.start, job.end))
    except ValueError:
        return 0.0
    return max(0.0, (end - start).total_seconds())


def _log_path(plan: Plan, stage: PlannedStage, job: Job | None, job_id: str) -> str:
    if job is not None and job.stdout:
        return job.stdout
    return log_pattern(plan, stage).replace("%j", job_id).replace("%x", job_name(plan, stage))


class _LogFollower:
    """Echo what the jobs append to their logs, each line prefixed with its stage like the local launcher."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def echo(self, stage: PlannedStage, path: str) -> None:
        if path not in self.offsets:  # start where the log was when the job was submitted
            record = _read_job_record(stage) or {}
            self.offsets[path] = int(record.get("log_start", 0)) if path == record.get("log") else 0
        try:
            with open(path, errors="replace") as f:
                f.seek(self.offsets[path])
                text = f.read()
                self.offsets[path] = f.tell()
        except OSError:
            return
        for line in text.splitlines():
            print(line if line.startswith(f"[{stage.name}]") else f"[{stage.name}] {line}", flush=True)


def _tail(path: str, n: int = 15) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return "(no log)"
    return "\n    ".join(lines)


def follow(plan: Plan, jobs: dict[str, str], done: dict[str, StageResult]) -> list[StageResult]:
    """Poll Slurm until every job has ended; one result per stage, in plan order."""
    launcher = plan.config["launcher"]
    poll = float(launcher.get("poll_seconds") or 10)
    logs = _LogFollower() if launcher.get("stream_logs", True) else None
    final: dict[str, Job] = {}
    last_state: dict[str, str] = {}
    by_name = {s.name: s for s in plan.stages}
    try:
        while len(final) < len(jobs):
            todo = {n: j for n, j in jobs.items() if n not in final}
            states = job_states(list(todo.values()))
            for name, job_id in todo.items():
                job = states.get(job_id)
                if job is None:
                    continue  # just submitted; sacct lags
                if logs is not None and job.state not in ("PENDING", ""):
                    logs.echo(by_name[name], _log_path(plan, by_name[name], job, job_id))
                if job.state != last_state.get(name):
                    last_state[name] = job.state
                    why = f" ({job.reason})" if job.reason not in ("", "None") else ""
                    print(f"==> {name}: job {job_id} {job.state}{why}", flush=True)
                if job.done:
                    final[name] = job
            if len(final) < len(jobs):
                time.sleep(poll)
    except KeyboardInterrupt:
        ids = " ".join(jobs[n] for n in jobs if n not in final)
        print(f"\nstopped following; the jobs keep running. Watch: squeue -j {','.join(ids.split())}  "
              f"Cancel: scancel {ids}", file=sys.stderr)
        raise
    results = dict(done)
    for stage in plan.stages:
        if stage.name in jobs:
            results[stage.name] = _job_result(plan, stage, jobs[stage.name], final[stage.name], results)
    return [results[s.name] for s in plan.stages]


def _gate_verdict(stage: PlannedStage, job: Job) -> dict | None:
    """The verdict a gated stage process left (it exits with GATED_EXIT_CODE), else None."""
    if job.state != "FAILED" or job.exit_code.split(":")[0] != str(gates.GATED_EXIT_CODE):
        return None
    return gates.read_verdict(stage.stage_dir)


def _job_result(plan: Plan, stage: PlannedStage, job_id: str, job: Job, upstream: dict[str, StageResult]) -> StageResult:
    log = _log_path(plan, stage, job, job_id)
    extra = {"job_id": job_id, "log": log, "script": script_path(stage), "slurm_state": job.state,
             "slurm_reason": job.reason, "exit_code": job.exit_code}
    failed_upstream = [u for u in stage.upstream if u in upstream and upstream[u].status not in DONE]
    manifest = stage.dir.read_manifest()
    if job.state == "COMPLETED" and manifest is not None:
        result = _result(stage, Status.COMPLETED, **extra)
        result.metrics = manifest.metrics
    elif (gated := _gate_verdict(stage, job)) is not None:  # the stage refused to start (posttrain/gates.py)
        result = _result(stage, Status.GATED, gated.get("reason", "gate failed"), gate=gated, **extra)
    elif job.state in ("TIMEOUT", "PREEMPTED") or job.exit_code.split(":")[0] == str(stop.EXIT_CODE):
        result = _result(stage, Status.INTERRUPTED, f"Slurm job {job_id} {job.state} (exit code {job.exit_code}): stopped "
                                               f"on a signal, after saving a checkpoint if it had time; run the same "
                                               f"command again to resume; see {log}", **extra)
    elif job.state == "CANCELLED" and (job.reason == "DependencyNeverSatisfied" or failed_upstream):
        cause = f"upstream '{failed_upstream[0]}' {upstream[failed_upstream[0]].status}" if failed_upstream \
            else "an upstream job failed"
        result = _result(stage, Status.CANCELLED, f"never ran: {cause}; Slurm cancelled job {job_id} "
                                              f"(DependencyNeverSatisfied)", **extra)
    elif job.state == "CANCELLED":
        result = _result(stage, Status.CANCELLED, f"Slurm job {job_id} was cancelled ({job.reason or 'scancel'}); "
                                             f"see {log}", **extra)
    else:
        why = f"Slurm job {job_id} {job.state}" + (f" (exit code {job.exit_code})" if job.exit_code else "")
        if job.state == "COMPLETED":
            why = f"Slurm job {job_id} ended without the stage writing its manifest"
        result = _result(stage, Status.FAILED, f"{why}; see {log}", **extra)
        print(f"==> {stage.name} failed ({why}); last lines of its log:\n    {_tail(log)}", file=sys.stderr)
    result.wall_seconds = round(_seconds(job), 2)
    return result


def job_state(stage_dir: str) -> JobState | None:
    """Slurm's record of the stage's latest job (job.json), `UNKNOWN` once Slurm has forgotten it."""
    record = read_json(Path(stage_dir) / JOB_FILE)
    if not record or not record.get("job_id"):
        return None
    job_id = str(record["job_id"])
    try:
        job = job_states([job_id]).get(job_id)
    except SlurmError:  # no Slurm client here (someone else's run_dir): say what is known
        job = None
    state = job.state if job else "UNKNOWN"
    waiting = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING")
    return JobState("Slurm", job_id, state, job.reason if job and job.reason not in ("None",) else "",
                    queued=state in waiting, running=state in ACTIVE and state not in waiting,
                    interrupted=state in ("TIMEOUT", "PREEMPTED"), cancelled=state == "CANCELLED",
                    submitted_at=float(record.get("submitted_at") or 0))


def run(plan: Plan, tracker: PipelineTracker) -> list[StageResult]:
    """Submit the chain; with `launcher.wait` follow it to the end. Without, stages are `submitted`
    (each job ends its own tracking run)."""
    try:
        jobs, done = submit(plan, tracker)
    except SlurmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if jobs:
        ids = ",".join(jobs.values())
        print(f"==> jobs {ids}: `squeue -j {ids}` to watch, `scancel {ids.replace(',', ' ')}` to stop", flush=True)
    if not plan.config["launcher"].get("wait"):
        results = dict(done)
        for stage in plan.stages:
            if stage.name in jobs:
                log = log_pattern(plan, stage).replace("%j", jobs[stage.name]).replace("%x", job_name(plan, stage))
                results[stage.name] = _result(stage, Status.SUBMITTED, f"Slurm job {jobs[stage.name]}",
                                              job_id=jobs[stage.name], log=log, script=script_path(stage))
                tracker.stage_end(stage, results[stage.name])  # records the job id; the run stays open
        return [results[s.name] for s in plan.stages]
    return _followed(plan, tracker, jobs, done)


def follow_submitted(plan: Plan, tracker: PipelineTracker, results: list[StageResult]) -> list[StageResult]:
    """Follow the jobs of the stages `run` left `submitted` (launcher.wait=false) to their end."""
    jobs = {r.name: str(r.extra["job_id"]) for r in results if r.status == Status.SUBMITTED and "job_id" in r.extra}
    return _followed(plan, tracker, jobs, {r.name: r for r in results if r.name not in jobs}) if jobs else results


def _followed(plan: Plan, tracker: PipelineTracker, jobs: dict[str, str],
              done: dict[str, StageResult]) -> list[StageResult]:
    results = follow(plan, jobs, done)
    for result in results:
        if result.name in jobs:
            tracker.stage_end(plan.stage(result.name), result)
    return results

"""What Slurm says about a job: `scontrol show job` while slurmctld remembers it, `sacct` after.

scontrol is immediate and has the final reason (`DependencyNeverSatisfied`), but forgets a job
MinJobAge seconds after it ends; sacct keeps it for good but lags a second or two and only
snapshots the reason. Stdlib only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

TERMINAL = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                      "PREEMPTED", "REVOKED", "TIMEOUT"})
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED",
                    "STAGE_OUT", "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "STOPPED"})


class SlurmError(Exception):
    """A Slurm command failed; the message carries its output."""


@dataclass
class Job:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...
    reason: str = ""  # why it is pending or was cancelled, e.g. DependencyNeverSatisfied
    start: str = ""
    end: str = ""
    exit_code: str = ""  # `code:signal`
    stdout: str = ""  # the job's log file, when scontrol still knows it

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


def run(argv: list[str], timeout: float = 30.0) -> str:
    """Run a Slurm client command; its stdout.

    Raises:
        SlurmError: the command is missing, timed out or exited non-zero.
    """
    if shutil.which(argv[0]) is None:
        raise SlurmError(f"'{argv[0]}' not found: launcher=slurm runs on a machine with the Slurm client tools")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(argv)}` did not answer within {timeout:g}s") from None
    if proc.returncode != 0:
        raise SlurmError(f"`{' '.join(argv)}` failed (exit code {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _state(raw: str) -> str:
    return raw.split()[0].rstrip("+") if raw.strip() else ""  # "CANCELLED by 0" -> CANCELLED


def scontrol_job(job_id: str) -> Job | None:
    """slurmctld's record, or None once it has forgotten the job."""
    try:
        out = run(["scontrol", "-o", "show", "job", job_id])
    except SlurmError:
        return None  # "Invalid job id specified" after MinJobAge
    if not out.strip():
        return None
    line = out.splitlines()[0]

    def field(key: str) -> str:
        match = re.search(rf"(?:^|\s){key}=(\S*)", line)
        return match.group(1) if match else ""

    return Job(job_id, _state(field("JobState")), field("Reason"), field("StartTime"), field("EndTime"),
               field("ExitCode"), field("StdOut"))


def sacct_jobs(job_ids: list[str]) -> dict[str, Job]:
    """Accounting records (empty when accounting is off or slurmdbd is down)."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    try:
        out = run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,Reason,Start,End,ExitCode"])
    except SlurmError:
        return {}
    jobs = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 6 and parts[0] in job_ids:
            jobs[parts[0]] = Job(parts[0], _state(parts[1]), parts[2], parts[3], parts[4], parts[5])
    return jobs


def job_states(job_ids: list[str]) -> dict[str, Job]:
    """The current record of each job Slurm knows; unknown ones (just submitted, sacct lagging) are absent."""
    found = {}
    for job_id in job_ids:
        if (job := scontrol_job(job_id)) is not None:
            found[job_id] = job
    missing = [j for j in job_ids if j not in found]
    found.update(sacct_jobs(missing))
    return found

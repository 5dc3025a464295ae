"""launcher=slurm: one sbatch job per stage, chained with afterok, on any Slurm cluster.

launcher.py submits and follows the jobs, sbatch.py writes their scripts, jobs.py asks Slurm about
them, checks.py checks the settings at plan time.
"""

from __future__ import annotations

from typing import Any

from posttrain.pipeline import Plan, StageResult
from posttrain.tracking import PipelineTracker
from workflows.launchers import JobState
from workflows.launchers.slurm import launcher
from workflows.launchers.slurm.checks import script_text_problems, slurm_problems
from workflows.launchers.slurm.sbatch import RENDEZVOUS


class SlurmLauncher:
    rendezvous = RENDEZVOUS

    def problems(self, cfg: dict[str, Any], stages: dict[str, dict[str, Any]]) -> list[str]:
        return script_text_problems(cfg, stages) + slurm_problems(cfg["launcher"], stages, cfg["run_dir"])

    def dry_run(self, plan: Plan) -> str:
        return launcher.dry_run(plan)

    def run(self, plan: Plan, tracker: PipelineTracker) -> list[StageResult]:
        return launcher.run(plan, tracker)

    def job_state(self, stage_dir: str) -> JobState | None:
        return launcher.job_state(stage_dir)

    def follow(self, plan: Plan, tracker: PipelineTracker, results: list[StageResult]) -> list[StageResult]:
        return launcher.follow_submitted(plan, tracker, results)


LAUNCHER = SlurmLauncher()

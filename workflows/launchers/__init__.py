"""Launchers decide where stage processes run; runners.py decides how they start.

A launcher is a module with a `LAUNCHER` object (the `Launcher` protocol) and a line in LAUNCHERS;
its settings are `launcher.*` (conf/launcher/<name>.yaml).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from posttrain.pipeline import Plan, StageResult
from posttrain.spec import StageSpec
from posttrain.tracking import PipelineTracker
from workflows.launchers.checks import deepspeed_problems
from workflows.launchers.runners import Rendezvous, resource_problems, runner_for

LAUNCHERS = {"local": "workflows.launchers.local", "slurm": "workflows.launchers.slurm"}


@dataclass
class JobState:
    """What a scheduler says about a stage's latest job."""

    scheduler: str  # the scheduler's name, as users know it
    job_id: str
    state: str  # the scheduler's own word (PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT ...)
    reason: str = ""  # why it waits or ended, in the scheduler's words
    queued: bool = False  # waiting to start
    running: bool = False
    interrupted: bool = False  # ended by a time limit or preemption: the next run resumes it
    cancelled: bool = False  # cancelled by a user or the scheduler (an upstream job failed)
    submitted_at: float = 0.0


class Launcher(Protocol):
    # How the nodes of a multi-node stage find each other; None: everything runs on one machine
    # (no multi-node stages, no one-task-per-process runner).
    rendezvous: Rendezvous | None

    def problems(self, cfg: dict[str, Any], stages: dict[str, dict[str, Any]]) -> list[str]:
        """Settings of this launcher that cannot work, each naming its key (before anything runs)."""

    def dry_run(self, plan: Plan) -> str:
        """What `dry_run=true` prints beyond the plan (the Slurm launcher: its job scripts)."""

    def run(self, plan: Plan, tracker: PipelineTracker) -> list[StageResult]:
        """Run (or submit) every stage that is not cached, in DAG order; one result per stage.
        A launcher that submits follows its jobs to their end when `launcher.wait` is true."""

    def follow(self, plan: Plan, tracker: PipelineTracker, results: list[StageResult]) -> list[StageResult]:
        """Follow the stages `run` left `submitted` to their end (a sweep submits every variant
        first, then follows them all); report each to the tracker; the final results."""

    def job_state(self, stage_dir: str) -> JobState | None:
        """The scheduler's word on the latest job submitted for the stage in `stage_dir` (`posttrain status`);
        None when this launcher starts stages itself or submitted no job for it. Never raises."""


def launcher_for(name: str) -> Launcher:
    """Raises: KeyError for a name that is not in LAUNCHERS (the planner reports it first)."""
    return importlib.import_module(LAUNCHERS[name]).LAUNCHER


def launch_problems(cfg: dict[str, Any], stages: dict[str, dict[str, Any]], specs: dict[str, StageSpec]) -> list[str]:
    """Every problem with how and where the stages would start, each naming its key."""
    name = cfg["launcher"].get("name")
    if name not in LAUNCHERS:
        return [f"launcher.name: unknown launcher '{name}' (known: {', '.join(LAUNCHERS)})"]
    launcher = launcher_for(name)
    problems = []
    schedulers = [n for n in LAUNCHERS if n != name and launcher_for(n).rendezvous is not None]
    for stage_name, stage in stages.items():
        resources = stage.get("resources") or {}
        found = resource_problems(stage_name, resources)
        problems.extend(found)
        if found or launcher.rendezvous is not None:
            continue
        where, nodes = f"stages.{stage_name}.resources", resources.get("nodes") or 1
        other = " or ".join(f"launcher={n}" for n in schedulers)
        if nodes > 1:
            problems.append(f"{where}.nodes: {nodes} nodes need a scheduler; launcher={name} runs on this machine "
                            f"(use {other}, or nodes=1)")
        if runner_for(resources) == "srun":
            problems.append(f"{where}.runner: srun starts one Slurm task per process and needs {other} "
                            f"(on this machine use torchrun)")
    for stage_name, spec in specs.items():
        problems.extend(deepspeed_problems(stage_name, spec))
    return problems + launcher.problems(cfg, stages)

"""Launchers decide where stage processes run; commands.py decides how they start."""

from __future__ import annotations

import importlib
from typing import Protocol

from workflows.plan import Plan
from workflows.report import StageResult
from workflows.tracking import Tracker

LAUNCHERS = {"local": "workflows.launchers.local", "slurm": "workflows.launchers.slurm"}


class Launcher(Protocol):
    # `tracker` (workflows/tracking.py): on_stage_start(stage) -> env for the stage process (its
    # MLflow run id), on_stage_end(stage, result) for every stage that ran, was cached or skipped.
    def run(self, plan: Plan, tracker: Tracker | None = None) -> list[StageResult]: ...


def get_launcher(name: str) -> Launcher:
    if name not in LAUNCHERS:
        raise SystemExit(f"error: unknown launcher '{name}' (known: {', '.join(LAUNCHERS)})")
    return importlib.import_module(LAUNCHERS[name])

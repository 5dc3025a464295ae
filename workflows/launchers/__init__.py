"""Launchers decide where stage processes run; commands.py decides how they start."""

from __future__ import annotations

import importlib
from typing import Protocol

from workflows.plan import Plan
from workflows.report import StageResult

LAUNCHERS = {"local": "workflows.launchers.local", "slurm": "workflows.launchers.slurm"}


class Launcher(Protocol):
    def run(self, plan: Plan) -> list[StageResult]: ...


def get_launcher(name: str) -> Launcher:
    if name not in LAUNCHERS:
        raise SystemExit(f"error: unknown launcher '{name}' (known: {', '.join(LAUNCHERS)})")
    return importlib.import_module(LAUNCHERS[name])

"""Plan-time checks of where a plan will write: the names that become folders, and the run_dir itself.

Nothing is created here: Hydra is told not to touch the disk before `main` (conf/config.yaml), so a
bad name or run_dir is refused before any folder exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from posttrain.names import name_problem, printable, quoted


def name_problems(cfg: dict[str, Any]) -> list[str]:
    """The pipeline's name and every stage name against posttrain.names.NAME (any launcher)."""
    problems = [p for p in [name_problem("name", cfg.get("name"), "pipeline")] if p]
    for stage in cfg.get("stages") or {}:
        if problem := name_problem(f"stages[{quoted(stage)}]", stage, "stage"):
            problems.append(problem)
    return problems


def run_dir_problems(run_dir: str, given: str) -> list[str]:
    """run_dir must be (or become) a writable folder; `given` is how the config wrote it."""
    where = f"run_dir {quoted(given)}" + (f" ({quoted(run_dir)})" if str(Path(given).expanduser()) != run_dir else "")
    if printable(given) != given:
        return [f"{where}: contains a line break or control character; choose a path without one"]
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        return [f"{where}: is a file, not a folder; choose another run_dir or move the file"]
    existing = path
    while not existing.exists():  # the nearest ancestor that exists: it must be a folder we can write in
        existing = existing.parent
    if not existing.is_dir():
        return [f"{where}: cannot be created, {quoted(existing)} is a file"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{where}: {quoted(existing)} is not writable by this user; choose another run_dir"]
    return []

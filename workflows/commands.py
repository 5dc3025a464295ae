"""How a stage starts (python, torchrun, deepspeed), independent of where it runs (launchers)."""

from __future__ import annotations

import sys
from typing import Any

RUNNERS = ("auto", "python", "torchrun", "deepspeed")


def runner_for(resources: dict[str, Any]) -> str:
    runner = resources.get("runner", "auto")
    if runner == "auto":
        many = resources.get("nodes", 1) * resources.get("processes_per_node", 1) > 1
        return "torchrun" if many else "python"
    return runner


def stage_command(resources: dict[str, Any], module: str, config_path: str, python: str | None = None) -> list[str]:
    """The argv that starts one stage on one node.

    Multi-node rendezvous arguments (`--nnodes`, `--rdzv_endpoint`) are added by the launcher
    that knows the hosts; locally everything runs on this machine.
    """
    python = python or sys.executable
    runner = runner_for(resources)
    nproc = str(resources.get("processes_per_node", 1))
    if runner == "python":
        return [python, "-m", module, config_path]
    if runner == "torchrun":
        return [python, "-m", "torch.distributed.run", "--nproc_per_node", nproc, "-m", module, config_path]
    if runner == "deepspeed":
        return [python, "-m", "deepspeed.launcher.runner", "--num_gpus", nproc, "--module", module, config_path]
    raise ValueError(f"unknown runner '{runner}' (known: {', '.join(RUNNERS)})")

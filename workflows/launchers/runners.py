"""How a stage starts (python, torchrun, deepspeed, srun tasks), apart from where it runs (launchers).

`stage_command` returns the argv one node runs. Across nodes the rendezvous comes from the
environment a launcher gives each node (its `Rendezvous`): those argv items are `ShellVar`s
(`$HEAD_NODE`), which a launcher writing a shell script leaves double-quoted so they expand and
every other item shell-quotes.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Any

RUNNERS = {
    "auto": "python for one process, torchrun for several",
    "python": "one process",
    "torchrun": "torch.distributed.run (through stages/lib/torchrun.py): one launcher per node, one process per device",
    "deepspeed": "DeepSpeed's launcher",
    "srun": "one scheduler task per process",
}


TORCHRUN = "stages.lib.torchrun"  # torch.distributed.run that survives SIGUSR1 and reports a stop on a signal as one


class ShellVar(str):
    """An argv item that is a shell expansion (`$HEAD_NODE:$MASTER_PORT`), only valid in a script.
    `per_task`: its value differs between the nodes of one job, so each task must expand it."""

    per_task: bool

    def __new__(cls, text: str, per_task: bool = False) -> ShellVar:
        item = super().__new__(cls, text)
        item.per_task = per_task
        return item


@dataclass(frozen=True)
class Rendezvous:
    """How a launcher's nodes find each other: shell variables its job script defines."""

    host: ShellVar  # the first node's address
    port: ShellVar
    run_id: ShellVar  # the same on every node of one run, different between runs
    node_rank: ShellVar  # per task
    hostfile: ShellVar  # DeepSpeed's: one line per node


def shell_join(argv: list[str]) -> str:
    """argv as one shell line: literal items quoted, `ShellVar` items double-quoted so they expand."""
    return " ".join(f'"{a}"' if isinstance(a, ShellVar) else shlex.quote(a) for a in argv)


def resolve_resources(resources: dict[str, Any], launcher: dict[str, Any]) -> dict[str, Any]:
    """Fill a stage's unset resources from the launcher's defaults; the result is what the stage gets.

    gpus_per_node: null -> launcher.gpus_per_node; processes_per_node: null -> one per GPU (1 without);
    time: null -> launcher.time; runner auto -> python (1 process), torchrun (several), as `runner_for`.
    """
    out = {"runner": "auto", "nodes": 1, "processes_per_node": None, "gpus_per_node": None, "time": None,
           **resources}
    if out["gpus_per_node"] is None:
        out["gpus_per_node"] = int(launcher.get("gpus_per_node") or 0)
    if out["processes_per_node"] is None:
        out["processes_per_node"] = max(1, out["gpus_per_node"])
    if out["time"] is None:
        out["time"] = launcher.get("time")
    out["runner"] = runner_for(out)
    return out


def runner_for(resources: dict[str, Any]) -> str:
    runner = resources.get("runner", "auto")
    if runner == "auto":
        many = (resources.get("nodes") or 1) * (resources.get("processes_per_node") or 1) > 1
        return "torchrun" if many else "python"
    return runner


def resource_problems(name: str, resources: dict[str, Any]) -> list[str]:
    """What cannot start as written, whatever the launcher: each names `stages.<name>.resources.<key>`."""
    where = f"stages.{name}.resources"
    runner = resources.get("runner", "auto")
    if runner not in RUNNERS:
        return [f"{where}.runner: unknown runner '{runner}' (known: {', '.join(RUNNERS)})"]
    problems = []
    for key in ("nodes", "processes_per_node", "gpus_per_node"):
        value = resources.get(key)
        if value is not None and value < (0 if key == "gpus_per_node" else 1):
            problems.append(f"{where}.{key}: must be at least {0 if key == 'gpus_per_node' else 1}, got {value}")
    if problems:
        return problems
    nodes, nproc = resources.get("nodes") or 1, resources.get("processes_per_node") or 1
    if runner_for(resources) == "python" and nodes * nproc > 1:
        problems.append(f"{where}.runner: python starts one process, but nodes x processes_per_node = "
                        f"{nodes * nproc}; use torchrun (or auto)")
    return problems


def rendezvous_args(nodes: int, rendezvous: Rendezvous | None) -> list[str]:
    """torchrun's rendezvous: one machine runs everything (`--standalone`: a free port, so two runs
    on one machine never collide), or c10d on the launcher's first host."""
    if nodes == 1:
        return ["--standalone"]
    if rendezvous is None:
        raise ValueError(f"{nodes} nodes need a launcher with a rendezvous")
    return ["--nnodes", str(nodes), "--rdzv_backend", "c10d",
            "--rdzv_endpoint", ShellVar(f"{rendezvous.host}:{rendezvous.port}"), "--rdzv_id", rendezvous.run_id]


def stage_command(resources: dict[str, Any], module: str, config_path: str, python: str | None = None,
                  rendezvous: Rendezvous | None = None) -> list[str]:
    """The argv that starts one stage on one node.

    With several nodes it holds the launcher's `ShellVar`s; the srun runner's command is one
    process of many (srun starts one task per process, the stage reads its rank from the
    scheduler's environment), so it is plain python.
    """
    python = python or sys.executable
    runner = runner_for(resources)
    nodes = resources.get("nodes") or 1
    nproc = str(resources.get("processes_per_node") or 1)
    if runner in ("python", "srun"):
        return [python, "-m", module, config_path]
    if runner == "torchrun":
        return [python, "-m", TORCHRUN, *rendezvous_args(nodes, rendezvous), "--nproc_per_node", nproc,
                "-m", module, config_path]
    if runner == "deepspeed":
        # --no_local_rank: the stage reads LOCAL_RANK from the environment, not a --local_rank argument
        launch = [python, "-m", "deepspeed.launcher.runner", "--no_local_rank", "--num_gpus", nproc]
        if nodes > 1:  # no ssh: the launcher starts the runner on every node, with its hostfile and node rank
            if rendezvous is None:
                raise ValueError(f"{nodes} nodes need a launcher with a rendezvous")
            launch += ["--num_nodes", str(nodes), "--hostfile", rendezvous.hostfile, "--no_ssh",
                       "--node_rank", rendezvous.node_rank, "--master_addr", rendezvous.host,
                       "--master_port", rendezvous.port]
        return [*launch, "--module", module, config_path]
    raise ValueError(f"unknown runner '{runner}' (known: {', '.join(RUNNERS)})")


def per_task(argv: list[str]) -> bool:
    """Whether argv reads variables that differ between the nodes of one job, so a script must
    expand it in each task rather than once in the batch shell."""
    return any(isinstance(a, ShellVar) and a.per_task for a in argv)

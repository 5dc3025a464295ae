"""The sbatch script of one stage: #SBATCH options, setup lines, environment, and `srun` of the stage.

Every config value is quoted where it lands: `shell_quote` in shell lines, `sbatch_quote` in
#SBATCH lines (sbatch's own parser: backslash escapes everywhere, quotes group). The planner
refuses line breaks in these values (checks.py). Only `launcher.setup` lines are shell code by intent.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from posttrain.paths import ROOT
from posttrain.pipeline import Plan, PlannedStage
from posttrain.registry import STAGE_TYPES
from posttrain.tracking import backend as tracking_backend
from workflows.launchers.env import code_on_path, default_stage_env
from workflows.launchers.runners import Rendezvous, ShellVar, per_task, shell_join, stage_command
from workflows.state.decide import attempt_line
from workflows.store.views import store_of

SCRIPT_NAME = "job.sbatch"
HEAD_NODE, MASTER_PORT = "HEAD_NODE", "MASTER_PORT"  # exported by the script before the stage starts
# The job script defines these on every node: the first host, a port from the job id (two jobs on
# one node never collide), the job id, each task's node rank, DeepSpeed's hostfile.
RENDEZVOUS = Rendezvous(host=ShellVar(f"${HEAD_NODE}"), port=ShellVar(f"${MASTER_PORT}"),
                        run_id=ShellVar("$SLURM_JOB_ID"), node_rank=ShellVar("$SLURM_NODEID", per_task=True),
                        hostfile=ShellVar("$DS_HOSTFILE"))
CONTAINER_HF_HOME = "/cache/huggingface"  # docker/Dockerfile's HF_HOME and TORCH_EXTENSIONS_DIR
CONTAINER_TORCH_EXTENSIONS = "/cache/torch_extensions"
_SAFE = re.compile(r"^[\w@%+=:,./-]+$")


def shell_quote(value: Any) -> str:
    return shlex.quote(str(value))


def sbatch_quote(value: Any) -> str:
    """A value for an #SBATCH line: bare when harmless, else double-quoted with `\\` and `"` escaped."""
    text = str(value)
    if _SAFE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def script_path(stage: PlannedStage) -> str:
    return str(stage.dir / SCRIPT_NAME)


def job_name(plan: Plan, stage: PlannedStage) -> str:
    prefix = plan.config["launcher"].get("job_name_prefix")
    return "-".join(p for p in (prefix, plan.name, stage.name) if p)


def log_pattern(plan: Plan, stage: PlannedStage) -> str:
    """launcher.output with posttrain's placeholders filled; Slurm's own (%j) are left for Slurm."""
    pattern = plan.config["launcher"].get("output") or "{stage_dir}/stage.log"
    path = pattern.format(stage_dir=stage.stage_dir, stage=stage.name, run_dir=plan.run_dir, pipeline=plan.name)
    return path if os.path.isabs(path) else os.path.join(plan.run_dir, path)


def submit_argv(path: str, dependencies: list[str]) -> list[str]:
    """sbatch's argv; a failed upstream makes Slurm cancel the job instead of leaving it pending forever."""
    argv = ["sbatch", "--parsable"]
    if dependencies:
        argv += [f"--dependency=afterok:{':'.join(dependencies)}", "--kill-on-invalid-dep=yes"]
    return [*argv, path]


def _resources(stage: PlannedStage) -> tuple[int, int, int, str]:
    """(nodes, srun tasks per node, GPUs per node, runner) of a stage."""
    res = stage.spec.resources
    return res.nodes, res.processes_per_node if res.runner == "srun" else 1, res.gpus_per_node, res.runner


def _sbatch_options(plan: Plan, stage: PlannedStage) -> list[str]:
    launcher = plan.config["launcher"]
    nodes, tasks, gpus, _ = _resources(stage)
    options = [("job-name", job_name(plan, stage)), ("output", log_pattern(plan, stage)), ("open-mode", "append"),
               ("nodes", nodes), ("ntasks-per-node", tasks)]
    if gpus:
        options.append(("gpus-per-node", gpus))
    for key in ("cpus_per_task", "mem", "partition", "account", "qos", "constraint"):
        if launcher.get(key) not in (None, ""):
            options.append((key.replace("_", "-"), launcher[key]))
    if stage.spec.resources.time:
        options.append(("time", stage.spec.resources.time))
    lines = [f"#SBATCH --{key}={sbatch_quote(value)}" for key, value in options]
    for option in launcher.get("extra_sbatch") or []:
        key, eq, value = str(option).partition("=")
        lines.append(f"#SBATCH {sbatch_quote(key)}{'=' + sbatch_quote(value) if eq else ''}")
    return lines


def _identity_mounts(plan: Plan, stage: PlannedStage) -> list[str]:
    """Host paths the stage reads or writes, bound at the same path so stage.yaml's paths hold."""
    spec = stage.spec
    paths = [plan.run_dir, str(plan.config["store_dir"])]  # the run_dir's stage links point into the store
    for ref in (spec.policy, spec.reference):
        if ref and os.path.isabs(ref.path):
            paths.append(ref.path)
    for value in (spec.tokenizer, spec.chat_template, (spec.model or {}).get("tokenizer"),
                  (spec.model or {}).get("chat_template"), (spec.model or {}).get("name_or_path")):
        if isinstance(value, str) and os.path.isabs(value):
            paths.append(value)
    for source in (*spec.data.sources, *spec.data.eval_sources) if spec.data else ():
        if source.path and os.path.isabs(source.path):
            paths.append(source.path)
    uri = spec.tracking.uri or ""
    if uri.startswith("sqlite:///"):
        paths.append(os.path.dirname(uri[len("sqlite:///"):]))  # the planner made it absolute
    if plan.config["launcher"]["container"].get("mount_code"):
        paths.append(str(ROOT))
    folders = [p if os.path.isdir(p) or not os.path.splitext(p)[1] else os.path.dirname(p) for p in paths]
    kept: list[str] = []
    for folder in sorted(set(folders)):  # sorted: a parent comes before what is inside it
        if not any(folder == k or folder.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(folder)
    # Listed in the order collected above, not alphabetically, so the script reads the same
    # wherever the checkout lives.
    return sorted(kept, key=folders.index)


def container_mounts(plan: Plan, stage: PlannedStage) -> list[str]:
    """`host:container[:ro]` binds: same-path binds for the stage's files, caches at the image's paths."""
    container = plan.config["launcher"]["container"]
    mounts = [f"{p}:{p}" for p in _identity_mounts(plan, stage)]
    if container.get("hf_cache"):
        mounts.append(f"{os.path.expanduser(container['hf_cache'])}:{CONTAINER_HF_HOME}")
    if container.get("torch_extensions"):
        mounts.append(f"{os.path.expanduser(container['torch_extensions'])}:{CONTAINER_TORCH_EXTENSIONS}")
    for mount in container.get("mounts") or []:
        host, _, rest = str(mount).partition(":")
        host = os.path.expanduser(host)
        mounts.append(f"{host}:{rest}" if rest else f"{host}:{host}")
    return mounts


def _container_env(plan: Plan) -> dict[str, str]:
    container = plan.config["launcher"]["container"]
    env = {}
    if container.get("hf_cache"):
        env["HF_HOME"] = CONTAINER_HF_HOME
    if container.get("torch_extensions"):
        env["TORCH_EXTENSIONS_DIR"] = CONTAINER_TORCH_EXTENSIONS
    if container.get("mount_code"):
        env["PYTHONPATH"] = str(ROOT)
    return env


def _stage_argv(plan: Plan, stage: PlannedStage) -> list[str]:
    launcher = plan.config["launcher"]
    container = launcher["container"]
    python = container["python"] if container.get("image") else (launcher.get("python") or sys.executable)
    return stage_command(asdict(stage.spec.resources), STAGE_TYPES[stage.type].module, str(stage.dir.spec_file),
                         python, RENDEZVOUS)


def srun_line(plan: Plan, stage: PlannedStage) -> str:
    """`srun` of the stage on every node, in the container when one is configured."""
    launcher = plan.config["launcher"]
    container = launcher["container"]
    nodes, tasks, gpus, _ = _resources(stage)
    srun = ["srun", f"--nodes={nodes}", f"--ntasks-per-node={tasks}", "--kill-on-bad-exit=1"]
    if launcher.get("cpus_per_task"):  # since Slurm 22.05 srun does not inherit it from sbatch
        srun.append(f"--cpus-per-task={launcher['cpus_per_task']}")
    argv = _stage_argv(plan, stage)
    command = shell_join(argv)
    if per_task(argv):  # SLURM_NODEID differs per node: expand it in each task, not in this shell
        command = f"bash -c {shlex.quote('exec ' + command)}"
    image = container.get("image")
    if not image:
        return " \\\n  ".join([shell_join(srun), command])
    mounts = ",".join(container_mounts(plan, stage))
    extra = " ".join(shell_quote(a) for a in container.get("args") or [])
    if container["runtime"] == "pyxis":
        env = ",".join(_container_env(plan))
        parts = [shell_join(srun), f"--container-image={shell_quote(image)}", f"--container-mounts={shell_quote(mounts)}",
                 f"--container-workdir={shell_quote(plan.run_dir)}"]
        if env:
            parts.append(f"--container-env={shell_quote(env)}")
        return " \\\n  ".join([*parts, *([extra] if extra else []), command])
    env = ",".join(f"{k}={v}" for k, v in _container_env(plan).items())
    apptainer = ["apptainer exec" + (" --nv" if gpus else ""), f"--bind {shell_quote(mounts)}",
                 f"--pwd {shell_quote(plan.run_dir)}"]
    if env:
        apptainer.append(f"--env {shell_quote(env)}")
    if extra:
        apptainer.append(extra)
    return " \\\n  ".join([shell_join(srun), *apptainer, shell_quote(image), command])


def _exports(plan: Plan, stage: PlannedStage) -> list[str]:
    launcher = plan.config["launcher"]
    container = launcher["container"]
    lines = []
    if not container.get("image") and code_on_path():
        lines.append(f'export PYTHONPATH={shell_quote(str(ROOT))}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    defaults = default_stage_env()
    if container.get("image"):  # the image's paths, handed over by apptainer --env / pyxis --container-env
        defaults.pop("TORCH_EXTENSIONS_DIR")  # a host path; the image sets its own unless bound below
        defaults.update(_container_env(plan))
    for key, value in defaults.items():
        if container.get("image") and key in _container_env(plan):
            lines.append(f"export {key}={shell_quote(value)}")
        else:
            lines.append(f'[ -n "${{{key}:-}}" ] || export {key}={shell_quote(value)}')  # the job's env wins
    if _resources(stage)[3] == "srun":  # one process per task: its CPUs, as torchrun does for its workers
        lines.append('[ -n "${OMP_NUM_THREADS:-}" ] || export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"')
    tags = tracking_backend(stage.spec.tracking.backend)
    if tags.tag_env:  # the tracker tags the stage's run with the job id
        lines.append(f'[ -n "${{{tags.tag_env}:-}}" ] || export {tags.tag_env}="{{\\"slurm.job_id\\": '
                     f'\\"$SLURM_JOB_ID\\"}}"  # tags the stage\'s {tags.label} run')
    for key, value in (launcher.get("env") or {}).items():
        lines.append(f"export {key}={shell_quote(value)}")
    return lines


def _rendezvous(stage: PlannedStage) -> list[str]:
    nodes, _, gpus, runner = _resources(stage)
    nproc = stage.spec.resources.processes_per_node
    if nodes * nproc == 1:
        return []
    lines = [
        f'export {HEAD_NODE}="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'export MASTER_ADDR="${HEAD_NODE}"',
        f"export {MASTER_PORT}=$((20000 + SLURM_JOB_ID % 20000))",
    ]
    if runner == "deepspeed" and nodes > 1:
        hostfile = str(stage.dir / "hostfile-")
        lines += [f'export DS_HOSTFILE={shell_quote(hostfile)}"$SLURM_JOB_ID"',
                  f'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/$/ slots={nproc}/" > "$DS_HOSTFILE"']
    return lines


def _entry_lock(plan: Plan, stage: PlannedStage) -> list[str]:
    """The job holds the stage's store entry while it runs, as a local run does (workflows/store/):
    a run elsewhere that needs the entry waits, and gc leaves it alone. On a filesystem without
    flock the job warns and runs unlocked rather than failing."""
    store, entry = store_of(plan), Path(stage.stage_dir)
    if not store.contains(entry):
        return []  # a plan that was not decided: its stages have no entry yet
    lock = shell_quote(store.lock_file(entry))
    return ["# hold the stage's store entry while it runs: a run elsewhere that needs it waits", f"exec 9>>{lock}",
            f'flock 9 || echo "posttrain: cannot lock {lock}; running without it" >&2',
            f'printf \'{{"pid": %s, "host": "%s", "started": %s, "command": "Slurm job %s"}}\' "$$" "$(hostname)" '
            f'"$(date +%s)" "$SLURM_JOB_ID" > {lock}', ""]


def _attempt_line(plan: Plan, stage: PlannedStage) -> list[str]:
    """The attempt's first line in the job's log, written when the job starts (a job that never starts
    leaves no line): the time, then what prepare_stage_dir writes for a local stage."""
    return ["# open this attempt in the log", f"printf '%s %s %s\\n' '==>' \"$(date '+%Y-%m-%d %H:%M:%S')\" "
            f"{shell_quote(attempt_line(stage, [plan.run_dir]))}", ""]


def render(plan: Plan, stage: PlannedStage, upstream_jobs: list[str] | None = None,
           env: dict[str, str] | None = None) -> str:
    """The complete sbatch script of `stage`. `upstream_jobs` (names) only annotate its header; `env`
    is exported too (the tracker's MLFLOW_RUN_ID for this stage, known only at submission)."""
    nodes, tasks, gpus, runner = _resources(stage)
    nproc = stage.spec.resources.processes_per_node
    after = f"; after {', '.join(upstream_jobs)} (--dependency=afterok)" if upstream_jobs else ""
    out = ["#!/bin/bash",
           f"# posttrain: stage {shell_quote(stage.name)} [{stage.type}] of pipeline {shell_quote(plan.name)}: "
           f"{nodes} node(s) x {nproc} process(es), {runner}{after}",
           "# submitted as: " + " ".join(submit_argv(shell_quote(script_path(stage)),
                                                     [f"<job of {u}>" for u in upstream_jobs or []])),
           *_sbatch_options(plan, stage),
           "set -eo pipefail  # no -u: module and conda activation scripts read unset variables", ""]
    setup = plan.config["launcher"].get("setup") or []
    if setup:
        out += ["# launcher.setup", *[str(line) for line in setup], ""]
    out += ["# the stage's environment", *_exports(plan, stage)]
    out += [f"export {key}={shell_quote(value)}" for key, value in (env or {}).items()] + [""]
    rendezvous = _rendezvous(stage)
    if rendezvous:
        out += ["# rendezvous on the allocation's first host; the port follows the job id", *rendezvous, ""]
    out += [*_entry_lock(plan, stage), *_attempt_line(plan, stage), srun_line(plan, stage), ""]
    return "\n".join(out)

"""Plan-time checks of how and where stages start: resources, launcher settings, DeepSpeed precision.

Everything here is reported with the planner's other problems, before any job is submitted.
"""

from __future__ import annotations

import re
import string
from typing import Any

from workflows.commands import resource_problems

CONTAINER_RUNTIMES = ("apptainer", "pyxis")
OUTPUT_FIELDS = ("stage_dir", "stage", "run_dir", "pipeline")  # placeholders of launcher.output
# Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
SLURM_TIME = re.compile(r"^(\d+-\d+(:\d+){0,2}|\d+(:\d+){0,2})$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _strings(value: Any, where: str):
    """(key, string) for every string inside a config value, keys written as the user would."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def _script_text_problems(cfg: dict[str, Any], stages: dict[str, Any]) -> list[str]:
    """Values that end up in a job script must be one line: a line break could start a command."""
    problems = []
    values = [("name", cfg["name"]), ("run_dir", cfg["run_dir"]), *_strings(cfg["launcher"], "launcher")]
    values += [(f"stages.{name}", name) for name in stages]
    for where, value in values:
        if "\n" in value or "\r" in value or "\0" in value:
            problems.append(f"{where}: contains a line break or NUL, which a job script cannot hold safely; "
                            f"write it on one line")
    for key in cfg["launcher"].get("env") or {}:
        if not ENV_NAME.match(key):
            problems.append(f"launcher.env.{key}: not a valid environment variable name")
    return problems


def _slurm_problems(launcher: dict[str, Any], stages: dict[str, Any], run_dir: str) -> list[str]:
    problems = []
    times = [("launcher.time", launcher.get("time"))]
    times += [(f"stages.{n}.resources.time", s["resources"].get("time")) for n, s in stages.items()]
    for where, value in times:
        if value is not None and not SLURM_TIME.match(str(value)):
            problems.append(f"{where}: '{value}' is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
    for i, option in enumerate(launcher.get("extra_sbatch") or []):
        if not str(option).startswith("-"):
            problems.append(f"launcher.extra_sbatch[{i}]: '{option}' is not an sbatch option; write the option "
                            f"alone, e.g. --exclusive or --mail-type=FAIL")
    fields: set[str] = set()
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(launcher.get("output") or "") if f is not None}
    except ValueError as exc:  # an unmatched brace
        problems.append(f"launcher.output: {exc}")
    for field_name in sorted(fields - set(OUTPUT_FIELDS)):
        problems.append(f"launcher.output: unknown placeholder '{{{field_name}}}' "
                        f"(known: {', '.join('{' + f + '}' for f in OUTPUT_FIELDS)}; Slurm's own are %j, %x, %N)")
    container = launcher.get("container") or {}
    if container.get("runtime") not in CONTAINER_RUNTIMES:
        problems.append(f"launcher.container.runtime: '{container.get('runtime')}' is not one of "
                        f"{', '.join(CONTAINER_RUNTIMES)}")
    for i, mount in enumerate(container.get("mounts") or []):
        parts = str(mount).split(":")
        if not parts[0].strip() or len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            problems.append(f"launcher.container.mounts[{i}]: '{mount}' is not host[:container[:ro]]")
    if container.get("image"):  # bind specs are `a:b,c:d`: a path holding either separator cannot be bound
        for key in ("run_dir", "launcher.container.hf_cache", "launcher.container.torch_extensions"):
            value = str(run_dir if key == "run_dir" else container.get(key.rsplit(".", 1)[1]) or "")
            if "," in value or ":" in value:
                problems.append(f"{key}: '{value}' holds ',' or ':', which a container bind mount cannot; "
                                f"choose a path without them")
    return problems


def _deepspeed_problems(name: str, spec: dict[str, Any]) -> list[str]:
    """DeepSpeed's bf16/fp16 must be "auto" or agree with the trainer's, or the Trainer refuses to
    start; ZeRO-3 must gather full weights on save, or the next stage has nothing to load."""
    deepspeed, trainer = spec.get("deepspeed") or {}, spec.get("trainer") or {}
    problems = []
    zero = deepspeed.get("zero_optimization") or {}
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        problems.append(f"stages.{name}.deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save: "
                        f"must be true under ZeRO-3, or the saved model holds no weights for the next stage")
    for precision in ("bf16", "fp16"):
        enabled = (deepspeed.get(precision) or {}).get("enabled", "auto")
        if enabled != "auto" and precision in trainer and bool(enabled) != bool(trainer[precision]):
            problems.append(f"stages.{name}.deepspeed.{precision}.enabled: {enabled} disagrees with "
                            f"stages.{name}.trainer.{precision}={trainer[precision]}; set it to auto")
    return problems


def launch_problems(cfg: dict[str, Any], stages: dict[str, Any], specs: dict[str, dict[str, Any]]) -> list[str]:
    """Every problem with how the stages would start, each naming its key."""
    from workflows.launchers import LAUNCHERS  # lazy: the launchers import the planner

    launcher = cfg["launcher"]
    name = launcher.get("name")
    if name not in LAUNCHERS:
        return [f"launcher.name: unknown launcher '{name}' (known: {', '.join(LAUNCHERS)})"]
    problems = []
    for stage_name, stage in stages.items():
        problems.extend(resource_problems(stage_name, stage.get("resources") or {}, name))
    for stage_name, spec in specs.items():
        problems.extend(_deepspeed_problems(stage_name, spec))
    if name == "slurm":  # other launchers ignore the Slurm settings (conf/local/ may hold a cluster's)
        problems.extend(_script_text_problems(cfg, stages))
        problems.extend(_slurm_problems(launcher, stages, cfg["run_dir"]))
    return problems

"""Plan-time checks of the Slurm launcher's settings: everything that lands in a job script."""

from __future__ import annotations

import re
import string
from typing import Any

from posttrain.names import ENV_NAME

CONTAINER_RUNTIMES = ("apptainer", "pyxis")
OUTPUT_FIELDS = ("stage_dir", "stage", "run_dir", "pipeline")  # placeholders of launcher.output
# Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
SLURM_TIME = re.compile(r"^(\d+-\d+(:\d+){0,2}|\d+(:\d+){0,2})$")


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


def script_text_problems(cfg: dict[str, Any], stages: dict[str, Any]) -> list[str]:
    """Values that end up in a job script must be one line: a line break could start a command."""
    problems = []
    # The pipeline's name, stage names and run_dir are checked for every launcher (workflows/planning/places.py).
    for where, value in _strings(cfg["launcher"], "launcher"):
        if "\n" in value or "\r" in value or "\0" in value:
            problems.append(f"{where}: contains a line break or NUL, which a job script cannot hold safely; "
                            f"write it on one line")
    for key in cfg["launcher"].get("env") or {}:
        if not ENV_NAME.match(key):
            problems.append(f"launcher.env.{key}: not a valid environment variable name")
    return problems


def slurm_problems(launcher: dict[str, Any], stages: dict[str, Any], run_dir: str) -> list[str]:
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

"""Plan-time checks of `stages.<name>.trainer` against TRL's own field list (no TRL import)."""

from __future__ import annotations

import re
from typing import Any

from posttrain.registry import MANAGED_TRAINER_KEYS
from posttrain.suggest import did_you_mean
from posttrain.trl_fields import trl_fields


def _check_type(value: Any, type_str: str) -> bool:
    """Loose check of a YAML value against a TRL field's annotation string."""
    accepted = {t.strip() for t in re.split(r"[|]", type_str)}
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "None": lambda v: v is None,
    }
    for t in accepted:
        base = t.split("[")[0]
        if base in ("list",) and isinstance(value, list):
            return True
        if base in ("dict",) and isinstance(value, dict):
            return True
        if base not in checks and base not in ("list", "dict"):
            return True  # enums, Union, accelerate types: leave it to TRL
        if base in checks and checks[base](value):
            return True
    return False


def trainer_problems(name: str, trl_config: str, trainer: dict[str, Any]) -> list[str]:
    """Unknown keys (with a suggestion), keys posttrain sets itself, values of the wrong type."""
    fields = trl_fields()["classes"][trl_config]
    problems = []
    for key, value in trainer.items():
        where = f"stages.{name}.trainer.{key}"
        if key in MANAGED_TRAINER_KEYS:
            problems.append(f"{where}: set by posttrain ({MANAGED_TRAINER_KEYS[key]})")
        elif key == "max_length" and value == "auto":
            continue  # measured on the stage's data (workflows/planning/data.py)
        elif key not in fields:
            problems.append(f"{where}: not a field of TRL's {trl_config}{did_you_mean(key, fields)}")
        elif not _check_type(value, fields[key]):
            problems.append(f"{where}: expected {fields[key]}, got {value!r} ({type(value).__name__})")
    return problems

"""Plan-time domains of posttrain's own keys (workflows/config/schema.py); TRL's fields are checked in
trainer.py, a stage type's own block by its plan hook (posttrain/stage_types/).

One table, DOMAINS, from a key pattern (`*` = one key, `[*]` = any list item) to its domain. Choices
come from the library that will refuse them where there is one (peft's LoraConfig `bias`, via
posttrain/trl_fields.json); ranges say why in a word. Keys checked elsewhere are not repeated here:
resources (workflows/launchers/runners.py), data weights, `max_rows` and `eval_fraction`
(posttrain/data/prepare.py), gates (gates.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from posttrain.names import quoted
from posttrain.suggest import did_you_mean
from posttrain.trl_fields import trl_fields

SEED_MAX = 2**32 - 1  # numpy's seed range (the Trainer seeds numpy, torch and random with it)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Domain:
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    why: str = ""

    def problem(self, value: Any) -> str | None:
        if self.choices:
            if value in self.choices:
                return None
            return f"{quoted(value)} is not one of {', '.join(self.choices)}{did_you_mean(value, self.choices)}"
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None  # the schema has checked the type
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if math.isfinite(value) and not low_bad and not high_bad:
            return None
        parts = [f"{'>' if self.low_open else '>='} {_num(self.low)}"] if self.low is not None else []
        parts += [f"{'<' if self.high_open else '<='} {_num(self.high)}"] if self.high is not None else []
        return f"{value} is out of range: must be {' and '.join(parts) or 'a finite number'} ({self.why})"


@cache
def _lora_choices(field: str) -> tuple[str, ...]:
    return tuple(trl_fields()["classes"]["LoraConfig"][field]["choices"])


def domains() -> dict[str, Domain]:
    seed = Domain(0, SEED_MAX, why="numpy refuses other seeds")
    lora = {
        "r": Domain(1, why="peft refuses a rank below 1 when it builds the adapter"),
        "lora_alpha": Domain(0, low_open=True, why="the adapter's scale is lora_alpha / r"),
        "lora_dropout": Domain(0, 1, high_open=True, why="a dropout probability"),
        "bias": Domain(choices=_lora_choices("bias"), why="peft's LoraConfig"),
    }
    out = {"seed": seed, "stages.*.data.seed": seed, "launcher.poll_seconds": Domain(0, low_open=True, why="seconds"),
           "launcher.gpus_per_node": Domain(0, why="a count"), "launcher.cpus_per_task": Domain(1, why="a count")}
    for key, domain in lora.items():
        out[f"peft.{key}"] = out[f"stages.*.peft.{key}"] = domain
    return out


def _pattern(key: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(key).replace(r"\[\*\]", r"\[\d+\]").replace(r"\*", r"[^.\[\]]+") + "$")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def value_problems(cfg: dict[str, Any]) -> list[str]:
    """Every key of the resolved config that DOMAINS covers and whose value is outside its domain."""
    table = [(_pattern(key), domain) for key, domain in domains().items()]
    problems = []
    for key, value in _flatten(cfg).items():
        if value is None:
            continue
        for pattern, domain in table:
            if pattern.match(key) and (why := domain.problem(value)):
                problems.append(f"{key}: {why}")
                break
    return problems

"""Gates: a stage runs only when an upstream stage's metric (`<stage>/<key>` of its manifest) is within
bounds. A launcher may check before starting the stage (`judge`); the stage process checks again
(`enforce`), so a gate holds on any launcher: a refused stage exits GATED_EXIT_CODE and leaves
gated.json. Stdlib only.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

from posttrain.artifacts import GATED_FILE
from posttrain.jsonio import read_json, write_json
from posttrain.spec import GateSpec, StageSpec

GATED_EXIT_CODE = 3  # a stage process that refused to start because its gate failed (gated.json says why)


@dataclass
class Verdict:
    metric: str
    value: float | None  # None: the upstream stage did not report it
    min: float | None
    max: float | None
    passed: bool
    reason: str  # `gate sft_eval/sft/accuracy=0.31 < min 0.5`


def judge(gate: GateSpec, metrics: dict[str, Any] | None) -> Verdict:
    """Whether `metrics` (the upstream stage's manifest metrics) pass `gate`."""
    low, high, metric = gate.min, gate.max, gate.metric
    value = (metrics or {}).get(gate.key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        shown = ", ".join(sorted(metrics or {})[:12]) or "none"
        return Verdict(metric, None, low, high, False,
                       f"gate {metric}: stage '{gate.stage}' did not report '{gate.key}' (it reported: {shown})")
    value = float(value)
    if low is not None and value < low:
        return Verdict(metric, value, low, high, False, f"gate {metric}={value:.4g} < min {low:g}")
    if high is not None and value > high:
        return Verdict(metric, value, low, high, False, f"gate {metric}={value:.4g} > max {high:g}")
    bounds = " and ".join(b for b in (f">= min {low:g}" if low is not None else "",
                                       f"<= max {high:g}" if high is not None else "") if b)
    return Verdict(metric, value, low, high, True, f"gate {metric}={value:.4g} {bounds}")


def enforce(spec: StageSpec) -> None:
    """In a stage process: exit with GATED_EXIT_CODE (after writing <stage_dir>/gated.json) when the
    stage's gate fails on the upstream manifest as it is on disk now."""
    if spec.gate is None:
        return
    verdict = judge(spec.gate, (read_json(spec.gate.manifest) or {}).get("metrics"))
    path = os.path.join(spec.stage_dir, GATED_FILE)
    if verdict.passed:
        if os.path.exists(path):
            os.remove(path)  # gated by an earlier run
        return
    write_json(path, asdict(verdict))
    print(f"[{spec.name}] {verdict.reason}; not running", flush=True)
    sys.exit(GATED_EXIT_CODE)


def read_verdict(stage_dir: str) -> dict[str, Any] | None:
    """The verdict a gated stage process left, if any."""
    return read_json(os.path.join(stage_dir, GATED_FILE))

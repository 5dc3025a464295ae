"""Planning: a composed config -> a validated `Plan` (posttrain/pipeline.py), or every problem at once."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from posttrain.pipeline import Plan
from workflows.planning.errors import PlanError
from workflows.planning.planner import Planner


def build_plan(cfg: DictConfig | dict[str, Any]) -> Plan:
    """Validate the whole pipeline and order its stages (why each runs is decided later, by
    workflows/state/decide.py, once the run_dir is locked).

    Raises:
        PlanError: with every problem found, each naming the stage or key at fault.
    """
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except Exception as exc:  # an interpolation or a ??? value the user must fill in
            name = cfg.get("name", "?") if not OmegaConf.is_missing(cfg, "name") else "?"
            key = getattr(exc, "full_key", None)
            raise PlanError(str(name), [str(exc).splitlines()[0] + (f" (key: {key})" if key else "")]) from None
    return Planner(cfg).build()


__all__ = ["Plan", "PlanError", "build_plan"]

"""One job of a `-m` sweep: its run_dir, its MLflow tags, and what it leaves for the end of the sweep."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from posttrain.pipeline import Plan, StageResult
from posttrain.tracking import PipelineTracker
from workflows.launchers import Launcher
from workflows.report.finish import finish

SWEEP_TAG, VARIANT_TAG = "posttrain.sweep", "posttrain.sweep.variant"


@dataclass
class Variant:
    number: int
    overrides: dict[str, str]  # the swept keys and this variant's values
    run_dir: str = ""
    pipeline: str = ""
    problem: str | None = None  # why it cannot run as configured
    exit_code: int | None = None
    later: Callable[[], int] | None = None  # what is left to do at the end of the sweep (follow its jobs)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.overrides.items()) or f"#{self.number}"


@dataclass
class Sweep:
    dir: Path
    swept: list[str]  # the keys the command line sweeps over
    variants: list[Variant] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.dir.name


_current: Sweep | None = None  # set by the callback in this process, for the jobs it runs here


def start(sweep: Sweep) -> None:
    global _current
    _current = sweep


def current() -> Sweep | None:
    return _current


def _key_values(overrides: list[str]) -> dict[str, str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group: o.input_line.split("=", 1)[1] for o in OverridesParser.create().parse_overrides(overrides)
            if "=" in o.input_line}


def join(cfg: DictConfig) -> Variant | None:
    """This job's variant when the command runs a `-m` sweep (None for a single run): unless
    `run_dir` is given, the variant's run_dir becomes its Hydra job folder, `<sweep dir>/<number>`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    sweep = _current
    values = _key_values(list(hydra.overrides.task))
    variant = Variant(int(hydra.job.num), {k: values[k] for k in (sweep.swept if sweep else []) if k in values})
    if "run_dir" in values:
        if sweep and any(v.run_dir == cfg.run_dir for v in sweep.variants):
            variant.problem = (f"run_dir: every variant of a sweep needs its own run_dir, and {cfg.run_dir} is "
                               f"another variant's; leave run_dir out (each gets <sweep dir>/<number>) or sweep it")
    else:
        cfg.run_dir = hydra.runtime.output_dir
    variant.run_dir, variant.pipeline = str(cfg.run_dir), str(cfg.get("name"))
    if sweep is not None:
        sweep.variants.append(variant)
    return variant


def tag(variant: Variant, plan: Plan) -> None:
    """The MLflow tags every run of the variant carries, so the UI finds and compares the sweep."""
    sweep = _current
    if sweep is not None:
        plan.tracking.tags.update({SWEEP_TAG: sweep.id, VARIANT_TAG: variant.label})


def follow_later(variant: Variant, plan: Plan) -> bool:
    """With `launcher.wait`, submit this variant now and follow it once every variant is submitted
    (the jobs of all variants then run side by side). Only when this process ends the sweep."""
    if _current is None or not plan.config["launcher"].get("wait"):
        return False
    plan.config["launcher"]["wait"] = False
    return True


def defer(variant: Variant, plan: Plan, launcher: Launcher, tracker: PipelineTracker, results: list[StageResult],
          held: contextlib.ExitStack) -> None:
    """Leave following the variant's jobs, reporting them and ending its tracking (`held`) to the
    end of the sweep (the callback calls `variant.later`)."""

    def follow_and_finish() -> int:
        try:
            with held:
                return finish(plan, tracker, launcher.follow(plan, tracker, results))
        except KeyboardInterrupt:
            print("\ninterrupted: the jobs keep running; run the same command again to follow them", file=sys.stderr)
            return 130

    variant.later = follow_and_finish

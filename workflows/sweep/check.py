"""Before the first variant of a `-m` sweep runs: plan every variant, so a bad value in the fifth is
refused before the first trains (Hydra alone composes a variant only when its turn comes).

Each variant is composed from the sweep's overrides exactly as Hydra's basic sweeper will run it,
with the run_dir it will get, and planned like a dry run: nothing is written. The variants then
plan again when they run, from the store as it is then.
"""

from __future__ import annotations

from omegaconf import DictConfig

from workflows.planning import PlanError, build_plan


def variant_overrides(config: DictConfig) -> tuple[list[list[str]], list[str]]:
    """(the override list of every job the basic sweeper will launch, in its order (job numbers);
    the keys it sweeps, in the command line's order)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(lines)
    swept = list(dict.fromkeys(o.key_or_group for o in overrides if o.is_sweep_override()))
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch], swept


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _refusal(overrides: list[str]) -> Exception | None:
    """Why the config these overrides compose cannot run: Hydra's composition error (a missing
    config, a bad key) or the planner's PlanError; None when it plans."""
    from hydra import compose

    try:
        cfg = compose(config_name="config", overrides=overrides)
    except Exception as err:  # Hydra's messages say what is wrong
        return err
    try:
        build_plan(cfg)
    except PlanError as err:
        return err
    return None


def problems(config: DictConfig, sweep_dir: str) -> list[str]:
    """One line per variant that cannot run as configured: `variant #N (its swept values): the problems`."""
    jobs, swept = variant_overrides(config)
    found = []
    for number, overrides in enumerate(jobs):
        extra = [] if any(_key(o) == "run_dir" for o in overrides) else [f"run_dir={sweep_dir}/{number}"]
        if (error := _refusal([*overrides, *extra])) is not None:
            label = " ".join(o.removeprefix("++") for o in overrides if _key(o) in swept)
            found.append(f"variant #{number} ({label}): " + str(error).replace("\n", "\n    "))
    return found

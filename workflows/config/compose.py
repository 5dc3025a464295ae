"""Composition: the schema and the `${asset:...}` resolver, registered once before Hydra composes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from posttrain.paths import CONF_DIR, project_path
from workflows.config.schema import VERSION_BASE, register_configs

_registered = False


def register() -> None:
    """Idempotent: the entry point and the tests both call it."""
    global _registered
    if _registered:
        return
    register_configs()
    # `${asset:data/demo/sft.jsonl}`: a file shipped with posttrain, wherever it is installed.
    OmegaConf.register_new_resolver("asset", lambda rel: str(project_path(rel)), replace=True)
    _registered = True


# Mappings whose keys belong to another project (TRL, DeepSpeed, transformers): a key that is not
# in the YAML yet is still a valid override, so `stages.dpo.trainer.precompute_ref_log_probs=true`
# works without Hydra's `+`. The planner checks these keys against TRL's own field list.
_OPEN_MAPPING = re.compile(r"^(stages\.[^.=]+\.(?:trainer|deepspeed)|deepspeed|model\.config|launcher\.env)\.[^=]+=")


# `force=all` / `force=dpo` are one-element lists; Hydra wants the brackets.
_BARE_FORCE = re.compile(r"^force=(?P<value>[^\[].*)$")


def normalize_overrides(overrides: list[str]) -> list[str]:
    """Turn `stages.x.trainer.key=v` into Hydra's add-or-override form `++stages.x.trainer.key=v`,
    and `force=dpo` into `force=[dpo]`."""
    out = [f"++{o}" if _OPEN_MAPPING.match(o) else o for o in overrides]
    return [f"force=[{m['value']}]" if (m := _BARE_FORCE.match(o)) else o for o in out]


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose `conf/` like the command line does (for tests, benchmarks and notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=VERSION_BASE):
        return hydra_compose(config_name=config_name, overrides=normalize_overrides(overrides or []))


def save_hydra_record(cfg: DictConfig, run_dir: str) -> None:
    """<run_dir>/.hydra/{config,hydra,overrides}.yaml, as Hydra would have written them before `main`.

    Called once this invocation holds run_dir's lock, so a refused invocation (run_dir busy, bad
    config) never rewrites the record of the one that ran. Best effort: a full disk is reported later,
    by the stage that cannot write.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # called outside @hydra.main (tests, notebooks)
        return
    hydra = HydraConfig.get()
    folder = Path(run_dir) / ".hydra"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, folder / "config.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hydra}), folder / "hydra.yaml")
        OmegaConf.save(hydra.overrides.task, folder / "overrides.yaml")
    except OSError as err:
        print(f"warning: could not write {folder} ({err.strerror})", file=sys.stderr)

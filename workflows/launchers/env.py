"""The environment of a stage process, on any launcher."""

from __future__ import annotations

import os

from posttrain.paths import ROOT
from posttrain.pipeline import Plan


def default_stage_env() -> dict[str, str]:
    """Variables every stage process gets unless the environment already sets them."""
    return {
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # One line per logging step comes from stages/lib/training.py; progress bars would flood stage.log.
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",  # TRL's reference log-prob precompute bar
        "PYTHONWARNINGS": "ignore::FutureWarning",
        # DeepSpeed JIT-compiles small ops on first use (~30 s); compiled once per machine, not per run.
        "TORCH_EXTENSIONS_DIR": os.path.join(os.path.expanduser("~"), ".cache", "posttrain", "torch_extensions"),
    }


def code_on_path() -> bool:
    """A checkout (not an installed package): `stages` is importable only with ROOT on PYTHONPATH."""
    return (ROOT / "stages").is_dir() and (ROOT / "posttrain").is_dir()


def stage_env(plan: Plan) -> dict[str, str]:
    """The environment of a local stage process: ours, plus what makes `python -m stages.x` importable."""
    env = dict(os.environ)
    if code_on_path():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for key, value in default_stage_env().items():
        env.setdefault(key, value)
    env.update({k: str(v) for k, v in (plan.config["launcher"].get("env") or {}).items()})
    return env

"""Shared test helpers: run the real CLI, read what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# A few steps per stage: enough for weights to move, small enough for CI.
FAST = [
    "stages.sft.trainer.max_steps=6", "stages.sft.trainer.save_steps=3", "stages.sft.trainer.logging_steps=2",
    "stages.dpo.trainer.max_steps=4", "stages.dpo.trainer.logging_steps=2",
    "stages.kto.trainer.max_steps=4", "stages.kto.trainer.logging_steps=2",
    "stages.eval.eval.max_rows=16",  # the shipped pipelines end with an eval: a few held-out rows suffice
]


def run_cli(*overrides: str, cwd: Path | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m workflows.run <overrides>` as a user runs it; output captured."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "workflows.run", *overrides], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def fast_overrides(pipeline: str) -> list[str]:
    """FAST minus the stages a pipeline doesn't define (an override of a missing stage is an error)."""
    from workflows.config import compose

    stages = compose([f"+pipeline={pipeline}"]).stages
    return [o for o in FAST if o.split(".")[1] in stages]


def read_summary(run_dir: Path) -> dict[str, dict]:
    data = json.loads((run_dir / "summary.json").read_text())
    return {s["name"]: s for s in data["stages"]}


@pytest.fixture
def tmp_run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture(autouse=True, scope="module")
def own_store(tmp_path_factory):
    """A stage store per test module (workflows/store/): no test reuses another module's stages,
    and none writes the checkout's outputs/store. Tests that need one per test set their own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POSTTRAIN_STORE_DIR", str(tmp_path_factory.mktemp("store")))
        yield

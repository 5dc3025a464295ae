"""What the workflows/state tests share: a private cache, private data, and the branches pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain.pipeline import Plan
from tests.conftest import ROOT
from workflows.config import compose
from workflows.planning import build_plan

# checkpoint -> sft -> {dpo, kto}, whatever stages the shipped pipelines gain
BRANCHES = [f"hydra.searchpath=[file://{ROOT / 'tests' / 'conf'}]", "+pipeline=branches"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POSTTRAIN_STORE_DIR", str(tmp_path / "store"))


@pytest.fixture
def data(tmp_path) -> Path:
    """Private copies of the demo data: editing them touches nothing else."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("sft.jsonl", "prefs.jsonl", "kto.jsonl"):
        lines = (ROOT / "data" / "demo" / name).read_text().splitlines(keepends=True)
        (folder / name).write_text("".join(lines[:40]))
    return folder


def data_overrides(data: Path) -> list[str]:
    """Point every stage of BRANCHES at the private data, with no eval split."""
    return [f"stages.sft.data.sources.0.path={data / 'sft.jsonl'}", "stages.sft.data.eval_sources=[]",
            f"stages.dpo.data.sources.0.path={data / 'prefs.jsonl'}", "stages.dpo.data.eval_sources=[]",
            f"stages.kto.data.sources.0.path={data / 'kto.jsonl'}", "stages.kto.data.eval_sources=[]"]


def branches_plan(run_dir: Path, data: Path, *overrides: str) -> Plan:
    """The validated plan of BRANCHES on the private data; nothing fingerprinted or decided yet."""
    return build_plan(compose([*BRANCHES, f"run_dir={run_dir}", "tracking=none", *data_overrides(data), *overrides]))

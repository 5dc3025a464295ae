"""The sweep table (workflows/sweep/table.py), from summaries as variants leave them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.jsonio import write_json
from workflows.sweep.table import build, render, rows, write
from workflows.sweep.variant import Sweep, Variant


def summary(run_dir: Path, sft_status: str, dpo_dir: str, status: str, metrics: dict) -> None:
    stages = [{"name": "sft", "type": "sft", "status": sft_status,
               "output_dir": "/store/sft/aa/model", "metrics": {"train_loss": 1.5}},
              {"name": "dpo", "type": "dpo", "status": status, "output_dir": dpo_dir, "metrics": metrics}]
    write_json(run_dir / "summary.json", {"pipeline": "sft_dpo", "run_dir": str(run_dir), "stages": stages})


def sweep_of(tmp_path: Path, shared_sft: str = "cached") -> Sweep:
    """Two DPO variants on one SFT, which the second variant found `shared_sft`: cached (a local
    sweep: trained by the first) or completed (a Slurm sweep: it followed the same job)."""
    sweep = Sweep(tmp_path / "20250101-120000", ["stages.dpo.trainer.beta"])
    for i, (beta, status, metrics) in enumerate([
            ("0.05", "completed", {"train_loss": 0.61, "rewards/accuracies": 0.7, "dpo/accuracy/reverse": 0.1,
                                   "epoch": 1.0}),
            ("0.2", "failed", {})]):
        run_dir = sweep.dir / str(i)
        summary(run_dir, "completed" if i == 0 else shared_sft, f"/store/dpo/{i}/model", status, metrics)
        sweep.variants.append(Variant(i, {"stages.dpo.trainer.beta": beta}, str(run_dir), "sft_dpo", exit_code=i))
    return sweep


@pytest.mark.parametrize("shared_sft", ["cached", "completed"])
def test_the_table_compares_what_differs_and_names_what_is_shared(tmp_path, shared_sft):
    data = build(sweep_of(tmp_path, shared_sft))
    assert data["shared"] == ["sft"]
    table = {row[0]: row[1:] for row in rows(data)}
    assert table["variant"] == ["#0", "#1"] and table["stages.dpo.trainer.beta"] == ["0.05", "0.2"]
    assert table["status"] == ["completed", "dpo failed"]
    assert table["trained"] == ["sft, dpo", "-"] and table["reused"] == ["-", "sft"]
    assert table["dpo.train_loss"] == ["0.61", ""] and table["dpo.rewards/accuracies"] == ["0.7", ""]
    assert "dpo.epoch" not in table and "dpo.dpo/accuracy/reverse" not in table  # only in sweep.json
    assert "sft.train_loss" not in table  # shared: the same in every variant
    text = render(data)
    assert "trained once, shared by every variant: sft" in text
    assert "tags.`posttrain.sweep` = '20250101-120000'" in text


def test_write_puts_json_and_markdown_in_the_sweep_dir(tmp_path):
    sweep = sweep_of(tmp_path)
    text, path = write(sweep)
    assert path == sweep.dir / "sweep.json"
    data = json.loads(path.read_text())
    assert [v["overrides"] for v in data["variants"]] == [{"stages.dpo.trainer.beta": "0.05"},
                                                          {"stages.dpo.trainer.beta": "0.2"}]
    assert data["variants"][0]["stages"]["dpo"]["metrics"]["dpo/accuracy/reverse"] == 0.1
    markdown = (sweep.dir / "sweep.md").read_text()
    assert "| stages.dpo.trainer.beta | 0.05 | 0.2 |" in markdown and "|---|---|---|" in markdown

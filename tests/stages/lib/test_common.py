"""What every stage process starts with (stages/lib/common.py)."""

from __future__ import annotations

import pytest

from posttrain.artifacts import Manifest, StageDir
from posttrain.spec import StageSpec
from stages.lib.common import load_spec


def test_a_stage_whose_entry_another_run_finished_meanwhile_exits_without_training(tmp_path, capsys):
    spec = StageSpec(name="sft", type="sft", stage_dir=str(tmp_path), model_dir=str(tmp_path / "model"), seed=0,
                     fingerprint="f" * 64)
    spec.dump(tmp_path / "stage.yaml")
    StageDir(tmp_path).write_manifest(Manifest("sft", "sft", "f" * 64, str(tmp_path / "model")))
    with pytest.raises(SystemExit) as done:  # a queued Slurm job that starts after a local run trained it
        load_spec([str(tmp_path / "stage.yaml")])
    assert done.value.code == 0
    assert "already complete" in capsys.readouterr().out and not (tmp_path / "checkpoints").exists()
    StageDir(tmp_path).write_manifest(Manifest("sft", "sft", "e" * 64, str(tmp_path / "model")))
    assert load_spec([str(tmp_path / "stage.yaml")]).fingerprint == "f" * 64  # another fingerprint: it runs

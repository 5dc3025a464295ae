"""Fingerprints (workflows/state/fingerprint.py): pure and fast, nothing trains."""

from __future__ import annotations

import shutil

from posttrain.pipeline import Plan
from tests.workflows.state.conftest import branches_plan as plan_for
from workflows.state.fingerprint import fingerprint


def fingerprints(plan: Plan) -> dict[str, str]:
    fingerprint(plan)
    return {s.name: s.spec.fingerprint for s in plan.stages}


def test_fingerprint_is_stable_and_independent_of_run_dir(tmp_path, data):
    first = fingerprints(plan_for(tmp_path / "a", data))
    assert first == fingerprints(plan_for(tmp_path / "a", data))
    assert first == fingerprints(plan_for(tmp_path / "b", data))  # a copied run_dir is still cached
    assert len(set(first.values())) == len(first)


def test_watching_and_checkpoint_cadence_do_not_change_fingerprints(tmp_path, data):
    base = fingerprints(plan_for(tmp_path / "r", data))
    same = fingerprints(plan_for(
        tmp_path / "r", data, "tracking=mlflow", "stages.dpo.trainer.logging_steps=1",
        "stages.dpo.trainer.save_steps=7", "stages.dpo.trainer.save_total_limit=5",
        "stages.dpo.trainer.report_to=[none]", "stages.dpo.trainer.run_name=other",
        "stages.dpo.trainer.gradient_checkpointing=true", "stages.sft.trainer.dataloader_num_workers=2",
        "stages.sft.resources.runner=torchrun",
    ))
    assert same == base


def test_a_dpo_parameter_changes_only_dpo(tmp_path, data):
    base = fingerprints(plan_for(tmp_path / "r", data))
    changed = fingerprints(plan_for(tmp_path / "r", data, "stages.dpo.trainer.beta=0.3"))
    assert [n for n in base if base[n] != changed[n]] == ["dpo"]


def test_sft_data_content_propagates_downstream_but_its_path_does_not(tmp_path, data):
    base = fingerprints(plan_for(tmp_path / "r", data))
    moved = tmp_path / "elsewhere.jsonl"
    shutil.copy(data / "sft.jsonl", moved)
    assert fingerprints(plan_for(tmp_path / "r", data, f"stages.sft.data.sources.0.path={moved}")) == base
    (data / "sft.jsonl").write_text("".join((data / "sft.jsonl").read_text().splitlines(keepends=True)[1:]))
    changed = fingerprints(plan_for(tmp_path / "r", data))
    assert [n for n in base if base[n] != changed[n]] == ["sft", "dpo", "kto"]


def test_world_size_and_seed_change_fingerprints(tmp_path, data):
    base = fingerprints(plan_for(tmp_path / "r", data))
    two_processes = fingerprints(plan_for(tmp_path / "r", data, "stages.kto.resources.processes_per_node=2"))
    assert two_processes["kto"] != base["kto"]
    assert set(fingerprints(plan_for(tmp_path / "r", data, "seed=7")).values()).isdisjoint(base.values())

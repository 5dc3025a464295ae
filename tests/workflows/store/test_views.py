"""Stage folders in the store (workflows/store/views.py): where a plan's stages live, the run_dir's
links, and run_dirs from before the store. Pure and fast: stage processes are simulated the way
tests/workflows/state/test_decide.py does."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from posttrain.artifacts import Manifest
from posttrain.pipeline import Plan
from tests.conftest import run_cli
from tests.workflows.state.conftest import BRANCHES, branches_plan, data_overrides
from tests.workflows.state.test_decide import finish, plan_for, reasons
from workflows.planning import PlanError
from workflows.state.decide import decide
from workflows.store.layout import Store
from workflows.store.views import adopt, attach


def store() -> Path:
    return Path(os.environ["POSTTRAIN_STORE_DIR"]).resolve()


def entries(plan: Plan) -> dict[str, str]:
    return {s.name: s.stage_dir for s in plan.stages}


def test_every_stage_lives_in_its_store_entry_and_reads_its_upstreams_there(tmp_path, data):
    plan = plan_for(tmp_path / "r", data)
    for stage in plan.stages:
        assert stage.stage_dir == str(store() / stage.type / stage.spec.fingerprint)
        assert stage.command[-1] == f"{stage.stage_dir}/stage.yaml"
    dpo, sft = plan.stage("dpo"), plan.stage("sft")
    assert dpo.spec.model_dir == f"{dpo.stage_dir}/model"
    assert dpo.spec.policy.path == dpo.spec.reference.path == sft.spec.model_dir == f"{sft.stage_dir}/model"
    assert sft.spec.policy.path == f"{plan.stage('checkpoint').stage_dir}/model"
    again = decide(plan)  # deciding again moves nothing and changes no fingerprint
    assert entries(again) == entries(plan_for(tmp_path / "r", data))


def test_another_run_dir_or_pipeline_shares_entries_and_variants_never_do(tmp_path, data):
    base = entries(plan_for(tmp_path / "a", data))
    assert entries(plan_for(tmp_path / "b", data)) == base  # another run_dir: the same entries
    variant = entries(plan_for(tmp_path / "c", data, "stages.dpo.trainer.beta=0.3"))
    assert {n for n in base if base[n] != variant[n]} == {"dpo"}  # a DPO variant: its own folder only
    without_kto = entries(plan_for(tmp_path / "d", data, "stages.kto.enabled=false"))
    assert without_kto == {n: base[n] for n in ("checkpoint", "sft", "dpo")}  # another pipeline, same stages


def test_a_finished_stage_is_cached_in_any_run_dir_through_its_link(tmp_path, data):
    finish(plan_for(tmp_path / "a", data))
    plan = plan_for(tmp_path / "b", data)
    assert set(reasons(plan).values()) == {"cached"}
    attach(plan)
    for stage in plan.stages:
        view = tmp_path / "b" / stage.name
        assert view.is_symlink() and not os.readlink(view).startswith("/")  # relative: a moved tree still works
        assert os.path.realpath(view) == stage.stage_dir
        assert json.loads((view / "manifest.json").read_text())["fingerprint"] == stage.spec.fingerprint
    assert Store.of(str(store())).run_dirs() == sorted([str(tmp_path / "a"), str(tmp_path / "b")])


def test_a_changed_stage_gets_a_new_entry_the_old_one_stays_whole(tmp_path, data):
    finish(plan_for(tmp_path / "r", data))
    first = plan_for(tmp_path / "r", data).stage("dpo").stage_dir
    plan = plan_for(tmp_path / "r", data, "stages.dpo.trainer.beta=0.3")
    assert reasons(plan)["dpo"] == "config changed: stages.dpo.trainer.beta"  # told against the link's entry
    finish(plan, "dpo")
    assert Path(first, "manifest.json").exists() and Path(first, "model", "model.safetensors").exists()
    assert os.path.realpath(tmp_path / "r" / "dpo") == plan.stage("dpo").stage_dir != first
    assert reasons(plan_for(tmp_path / "r", data))["dpo"] == "cached"  # switching back costs nothing


def legacy_run_dir(run_dir: Path, data: Path) -> Plan:
    """A run_dir as posttrain left it before the store: each stage's folder inside it."""
    plan = branches_plan(run_dir, data)
    from workflows.state.fingerprint import fingerprint

    fingerprint(plan)
    for stage in plan.stages:
        model = Path(stage.spec.model_dir)
        model.mkdir(parents=True)
        (model / "model.safetensors").write_bytes(b"weights of " + stage.name.encode())
        (Path(stage.stage_dir) / "fingerprint.json").write_text(json.dumps({"fingerprint": stage.spec.fingerprint}))
        stage.dir.write_manifest(Manifest(name=stage.name, type=stage.type, fingerprint=stage.spec.fingerprint,
                                          model_dir=stage.spec.model_dir, files=["model.safetensors"]))
    return plan


def test_a_run_dir_from_before_the_store_stays_cached_and_moves_in(tmp_path, data, capsys):
    run_dir = tmp_path / "old"
    legacy_run_dir(run_dir, data)
    assert set(reasons(plan_for(run_dir, data)).values()) == {"cached"}  # a dry run judges it where it is
    assert not (run_dir / "sft").is_symlink()
    plan = branches_plan(run_dir, data)
    adopt(plan)  # what a real run does first
    decide(plan)
    assert set(reasons(plan).values()) == {"cached"}
    assert "moved" in capsys.readouterr().out
    for stage in plan.stages:
        assert (run_dir / stage.name).is_symlink() and os.path.realpath(run_dir / stage.name) == stage.stage_dir
        assert (Path(stage.spec.model_dir) / "model.safetensors").read_bytes() == b"weights of " + stage.name.encode()


def test_an_old_folder_the_store_cannot_take_is_kept_aside_with_one_line(tmp_path, data, capsys):
    run_dir = tmp_path / "old"
    legacy_run_dir(run_dir, data)
    (run_dir / "kto" / "fingerprint.json").unlink()
    (run_dir / "kto" / "manifest.json").unlink()  # no fingerprint recorded: nothing says what it is
    plan = branches_plan(run_dir, data)
    adopt(plan)
    out = capsys.readouterr().out
    assert re.search(rf"kept {re.escape(str(run_dir / 'kto'))} as .*kto.before-store \(it records no fingerprint\); "
                     r"delete it", out)
    assert (run_dir / "kto.before-store" / "model" / "model.safetensors").exists()
    assert reasons(decide(plan)) == {"checkpoint": "cached", "sft": "cached", "dpo": "cached", "kto": "new"}


def test_a_run_dir_inside_the_store_is_refused(tmp_path, data, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_STORE_DIR", str(tmp_path / "store"))
    with pytest.raises(PlanError) as err:
        branches_plan(tmp_path / "store" / "mine", data)
    assert err.value.problems == [f"run_dir: {tmp_path / 'store' / 'mine'} is inside the stage store "
                                  f"({tmp_path / 'store'}, store_dir); choose a run_dir outside it"]


def test_the_cli_links_the_run_dir_and_a_dry_run_writes_nothing(tmp_path, data):
    run_dir = tmp_path / "r"
    proc = run_cli(*BRANCHES, f"run_dir={run_dir}", "tracking=none", "dry_run=true", *data_overrides(data))
    assert proc.returncode == 0, proc.stderr
    assert not any(p.is_symlink() for p in run_dir.glob("*")) and not store().exists()
    assert f"{store()}/sft/" in proc.stdout  # the command names the entry's stage.yaml

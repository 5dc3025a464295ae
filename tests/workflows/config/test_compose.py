"""Composition: every shipped pipeline composes and validates; typos fail naming the key."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from posttrain.paths import CONF_DIR
from posttrain.pipeline import Plan
from posttrain.registry import STAGE_TYPES
from tests.conftest import ROOT, run_cli
from workflows.config import compose, register
from workflows.config.schema import VERSION_BASE
from workflows.planning import build_plan

PIPELINE_DIR = ROOT / "conf" / "pipeline"
PIPELINES = sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml"))


def hydra_pipelines() -> set[str]:
    """The options of the `pipeline` group as Hydra's own config repository lists them."""
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=VERSION_BASE):
        return set(GlobalHydra.instance().config_loader().get_group_options("pipeline"))


def assert_runnable(plan: Plan) -> None:
    """Stages in topological order, each upstream in the plan, each stage started by its type's script."""
    names = [s.name for s in plan.stages]
    assert names and len(names) == len(set(names)), names
    for stage in plan.stages:
        assert stage.type in STAGE_TYPES and stage.spec.name == stage.name and stage.spec.type == stage.type
        assert all(up in names and names.index(up) < names.index(stage.name) for up in stage.upstream), stage.name
        assert stage.stage_dir == str(Path(plan.run_dir) / stage.name)
        if stage.external:
            assert stage.command == []  # a given model: nothing starts
            continue
        module = STAGE_TYPES[stage.type].module
        assert stage.command, f"{stage.name} has no command"
        assert stage.command[-1] == str(Path(stage.stage_dir) / "stage.yaml")
        assert stage.command[-3:-1] in (["-m", module], ["--module", module]), stage.command


def test_pipelines_are_found_and_every_one_composes_and_validates():
    """The glob finds every pipeline file, Hydra sees the same ones, and each plans."""
    assert PIPELINES, f"no pipeline found in {PIPELINE_DIR}"
    on_disk = {p.name.rsplit(".", 1)[0] for p in PIPELINE_DIR.iterdir() if p.suffix in (".yaml", ".yml")}
    assert set(PIPELINES) == on_disk == hydra_pipelines()
    assert {"sft_dpo", "sft_kto", "sft_dpo_kto"} <= set(PIPELINES)
    planned = {}
    for pipeline in PIPELINES:
        plan = build_plan(compose([f"+pipeline={pipeline}"]))
        assert plan.name == pipeline
        assert_runnable(plan)
        planned[pipeline] = plan
    assert set(planned) == set(PIPELINES)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_pipeline_composes_and_validates(pipeline):
    plan = build_plan(compose([f"+pipeline={pipeline}"]))
    assert plan.name == pipeline
    names = [s.name for s in plan.stages]
    for stage in plan.stages:  # topological: every upstream comes first
        assert all(names.index(up) < names.index(stage.name) for up in stage.upstream)
        if not stage.external:
            assert stage.command[-1] == str(Path(stage.stage_dir) / "stage.yaml")
    assert_runnable(plan)


def test_branches_share_one_sft():
    plan = build_plan(compose(["+pipeline=sft_dpo_kto"]))
    assert plan.stage("dpo").upstream == ["sft"] and plan.stage("kto").upstream == ["sft"]
    sft_out = plan.stage("sft").spec.model_dir
    for name in ("dpo", "kto"):
        assert plan.stage(name).spec.policy.path == sft_out
        assert plan.stage(name).spec.reference.path == sft_out


def test_typo_in_a_schema_key_fails_at_composition_naming_the_key():
    with pytest.raises(ConfigCompositionException) as err:
        compose(["+pipeline=sft_dpo", "stages.dpo.trainr.beta=0.2"])
    cause = err.value.__cause__
    assert isinstance(cause, ConfigKeyError) and cause.full_key == "stages.dpo.trainr"


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as err:
        compose(["+pipeline=sft_dpo", "stages.dpo.resources.nodes=many"])
    assert isinstance(err.value.__cause__, ValidationError)
    assert err.value.__cause__.full_key == "stages.dpo.resources.nodes"


def test_trl_fields_pass_through_with_trl_names_and_no_plus():
    cfg = compose([
        "+pipeline=sft_dpo", "stages.dpo.trainer.beta=0.2", "stages.dpo.trainer.loss_type=[sigmoid,sft]",
        "stages.dpo.trainer.precompute_ref_log_probs=true",
    ])
    trainer = build_plan(cfg).stage("dpo").spec.trainer
    assert trainer["beta"] == 0.2
    assert trainer["loss_type"] == ["sigmoid", "sft"]
    assert trainer["precompute_ref_log_probs"] is True


def test_data_can_be_swapped_by_group_override():
    plan = build_plan(compose(["+pipeline=sft_kto", "data@stages.kto.data=prefs_demo"]))
    assert plan.stage("kto").spec.data.format == "preference"  # pairs are split for KTO


def test_dry_run_prints_the_plan_fast(tmp_path):
    start = time.perf_counter()
    proc = run_cli("+pipeline=sft_dpo", "dry_run=true", f"run_dir={tmp_path / 'run'}")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "python -m stages.dpo" in proc.stdout.replace(" -m stages", " -m stages")
    for name in ("checkpoint", "sft", "dpo"):
        assert f"{name}" in proc.stdout
        assert not (tmp_path / "run" / name).exists()  # nothing ran, no stage folder
    assert elapsed < 10  # generous for a loaded CI machine; bench/ measures the real number


def test_cli_does_not_import_torch(tmp_path):
    code = (
        "import sys; sys.argv=['x', '+pipeline=sft_dpo_kto', 'dry_run=true', 'run_dir=" + str(tmp_path) + "'];"
        "import workflows.run as r\ntry:\n r.cli()\nexcept SystemExit: pass\n"
        "heavy=[m for m in ('torch','transformers','trl','deepspeed','mlflow') if m in sys.modules]; print('HEAVY', heavy)"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr

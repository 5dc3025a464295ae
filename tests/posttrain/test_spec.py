"""The stage contract (posttrain/spec.py): a StageSpec survives stage.yaml unchanged, and a stage.yaml
that does not fit is refused with a SpecError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from posttrain.spec import DataSpec, GateSpec, ModelRef, Resources, Source, SpecError, StageSpec, TrackingSpec
from tests.conftest import ROOT
from workflows.config import compose
from workflows.planning import build_plan
from workflows.state.decide import decide

PIPELINES = sorted(p.stem for p in (ROOT / "conf" / "pipeline").glob("*.yaml"))


def full_spec(tmp_path: Path) -> StageSpec:
    """A spec with every field set, nested records included."""
    reference = ModelRef(ref="checkpoint", path=str(tmp_path / "checkpoint/model"), stage="checkpoint", label="base")
    return StageSpec(
        name="dpo", type="dpo", stage_dir=str(tmp_path / "dpo"), model_dir=str(tmp_path / "dpo/model"), seed=7,
        resources=Resources(runner="torchrun", nodes=2, processes_per_node=4, gpus_per_node=4, time="01:00:00"),
        tracking=TrackingSpec(backend="mlflow", uri="sqlite:///x.db", experiment="e", register="dpo",
                              registered_model="m"),
        policy=ModelRef(ref="sft", path=str(tmp_path / "sft/model"), stage="sft", tokenizer="tok", revision="abc"),
        reference=reference,
        data=DataSpec(format="preference",
                      sources=[Source(path="a.jsonl", weight=2.0, max_rows=10),
                               Source(stage="onpolicy", path="d", name="kto", format="preference")],
                      eval_sources=[Source(path="org/prefs", split="test", revision="r1")], eval_fraction=0.1,
                      shuffle=False, seed=3, on_invalid="drop"),
        trainer={"beta": 0.1, "loss_type": "sigmoid", "max_length": 64}, peft={"r": 8, "target_modules": ["q_proj"]},
        deepspeed={"zero_optimization": {"stage": 3}}, chat_template="t.jinja",
        gate=GateSpec(metric="sft_eval/sft/accuracy", stage="sft_eval", key="sft/accuracy",
                      manifest=str(tmp_path / "sft_eval/manifest.json"), min=0.5),
        models=[ModelRef(ref="sft", path="p", label="sft", reference=reference)], settings={"max_rows": 16},
        model={"name_or_path": None, "architecture": "llama"}, fingerprint="f" * 64,
        fingerprint_inputs={"trainer": {"beta": 0.1}}, resume_from="checkpoint-3")


def test_a_full_spec_round_trips_through_stage_yaml(tmp_path):
    spec = full_spec(tmp_path)
    spec.dump(tmp_path / "stage.yaml")
    loaded = StageSpec.load(tmp_path / "stage.yaml")
    assert loaded == spec
    assert loaded.to_dict() == spec.to_dict() == yaml.safe_load((tmp_path / "stage.yaml").read_text())
    assert loaded.tokenizer == "tok" and loaded.resources.world_size == 8
    assert loaded.models[0].reference == spec.reference and isinstance(loaded.models[0].reference, ModelRef)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_planned_spec_round_trips_unchanged(tmp_path, pipeline):
    plan = decide(build_plan(compose([f"+pipeline={pipeline}", f"run_dir={tmp_path}/run"])))
    for stage in plan.stages:
        path = tmp_path / stage.name / "stage.yaml"
        stage.spec.dump(path)
        assert StageSpec.load(path) == stage.spec, stage.name


@pytest.mark.parametrize("change, key, says", [
    (lambda d: d["resources"].update(gpus=2), "stage.resources.gpus", "not a field of Resources"),
    (lambda d: d.update(trainer_args={}), "stage.trainer_args", "not a field of StageSpec"),
    (lambda d: d["resources"].update(nodes="two"), "stage.resources.nodes", "expected int, got str 'two'"),
    (lambda d: d["resources"].update(nodes=True), "stage.resources.nodes", "expected int, got a boolean"),
    (lambda d: d["data"]["sources"][1].update(weight="heavy"), "stage.data.sources[1].weight",
     "expected float, got str 'heavy'"),
    (lambda d: d["policy"].update(path=3), "stage.policy.path", "expected str, got int 3"),
    (lambda d: d.update(trainer=["beta"]), "stage.trainer", "expected a mapping, got list"),
    (lambda d: d.pop("seed"), "stage.seed", "missing"),
])
def test_load_refuses_a_key_that_does_not_fit_and_names_it(tmp_path, change, key, says):
    data = full_spec(tmp_path).to_dict()
    change(data)
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as err:
        StageSpec.load(path)
    assert str(err.value).startswith(f"{path}: {key}: "), err.value
    assert says in str(err.value)


def test_load_refuses_a_file_that_is_not_yaml(tmp_path):
    path = tmp_path / "stage.yaml"
    path.write_text("name: [sft\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        StageSpec.load(path)

"""DAG validation: every problem found at once, each naming the culprit; exit code 2, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from workflows.config import compose
from workflows.planning import PlanError, build_plan
from workflows.planning.dag import find_cycle as _find_cycle


def problems(*overrides: str, pipeline: str = "sft_dpo") -> list[str]:
    with pytest.raises(PlanError) as err:
        build_plan(compose([f"+pipeline={pipeline}", *overrides]))
    return err.value.problems


def test_cycle_prints_its_path():
    found = problems("stages.sft.policy=dpo")
    assert "cycle: sft -> dpo -> sft" in found


def test_cycle_detection_on_a_longer_loop():
    assert _find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}) in (["a", "b", "c", "a"], ["c", "a", "b", "c"],
                                                                 ["b", "c", "a", "b"])
    assert _find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_missing_stage_is_named_with_a_suggestion():
    [msg] = problems("stages.dpo.policy=sfft")
    assert "stage 'dpo' needs 'sfft'" in msg and "did you mean 'sft'" in msg


def test_reference_can_point_elsewhere_but_must_exist():
    [msg] = problems("stages.dpo.reference=kto")
    assert "stage 'dpo' needs 'kto' (reference)" in msg
    plan = build_plan(compose(["+pipeline=sft_dpo", "stages.dpo.reference=checkpoint"]))
    dpo = plan.stage("dpo")
    assert dpo.spec.reference.path == plan.stage("checkpoint").spec.model_dir
    assert set(dpo.upstream) == {"sft", "checkpoint"}


def test_unknown_stage_type():
    [msg] = problems("stages.dpo.type=dppo")
    assert msg.startswith("stages.dpo.type: unknown stage type 'dppo'") and "did you mean 'dpo'" in msg


def test_wrong_data_format_for_stage_type():
    [msg] = problems("data@stages.dpo.data=sft_demo")
    assert msg == "stages.dpo.data.format: a dpo stage takes preference data, not 'messages'"


def test_unknown_and_mistyped_trainer_keys():
    found = problems("stages.dpo.trainer.bta=0.2", "stages.sft.trainer.learning_rate=fast")
    assert any(p.startswith("stages.dpo.trainer.bta: not a field of TRL's DPOConfig; did you mean 'beta'") for p in found)
    assert any(p.startswith("stages.sft.trainer.learning_rate: expected float") for p in found)


def test_managed_trainer_key_is_refused():
    [msg] = problems("stages.sft.trainer.output_dir=/tmp/x")
    assert "set by posttrain" in msg


def test_missing_data_file_is_named():
    [msg] = problems("stages.sft.data.sources.0.path=nowhere/sft.jsonl")
    assert msg == "stages.sft.data.sources[0].path: no such file or folder 'nowhere/sft.jsonl'"


def test_all_problems_reported_at_once():
    found = problems("stages.sft.type=sftt", "stages.dpo.trainer.bta=1", "stages.kto.policy=nope",
                     pipeline="sft_dpo_kto")
    assert len(found) == 3, found


def test_cli_reports_problems_with_exit_code_2_and_no_traceback(tmp_path):
    proc = run_cli("+pipeline=sft_dpo_kto", "stages.sft.policy=dpo", "stages.kto.trainer.bta=1",
                   f"run_dir={tmp_path}")
    assert proc.returncode == 2
    assert "found 2 problems" in proc.stderr
    assert "cycle: sft -> dpo -> sft" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_pipeline_without_stages_is_refused(tmp_path):
    proc = run_cli("+name=empty", f"run_dir={tmp_path}")
    assert proc.returncode == 2 and "defines no stages" in proc.stderr


def test_register_must_name_a_stage():
    with pytest.raises(PlanError) as err:
        build_plan(compose(["+pipeline=sft_dpo", "tracking.register=dpoo"]))
    assert any(p.startswith("tracking.register: 'dpoo' is not a stage") and "did you mean 'dpo'" in p
               for p in err.value.problems)

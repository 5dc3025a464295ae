"""`eval` stages at plan time: the models measured and their references, the eval block's checks,
and gates on eval metrics (their plan-time checks and the verdicts launchers and stages act on)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from posttrain.pipeline import StageResult
from posttrain.status import Status
from tests.posttrain.stage_types.plans import plan, problems

SFT_EVAL = ["+stage@stages.sft_eval=eval", "stages.sft_eval.models=[sft]", "stages.sft_eval.eval.pairs=null",
            "stages.sft_eval.eval.max_rows=16"]


def test_eval_measures_each_model_against_its_upstream_reference():
    p = plan()
    evaluation = p.stage("eval")
    assert set(evaluation.upstream) == {"checkpoint", "sft", "dpo"}
    models = {m.label: m for m in evaluation.spec.models}
    assert models["dpo"].path == p.stage("dpo").spec.model_dir
    assert models["dpo"].reference.path == p.stage("sft").spec.model_dir  # DPO was trained against SFT
    assert models["sft"].reference is None and models["checkpoint"].reference is None
    assert evaluation.spec.model_dir == os.path.join(p.run_dir, "eval", "results")
    assert Path(evaluation.spec.settings["tasks"]).is_file() and evaluation.spec.policy is None


def test_gate_adds_an_edge_and_names_bad_metrics():
    p = plan(*SFT_EVAL, "stages.dpo.gate={metric: sft_eval/sft/accuracy, min: 0.5}")
    assert "sft_eval" in p.stage("dpo").upstream
    assert [s.name for s in p.stages].index("sft_eval") < [s.name for s in p.stages].index("dpo")
    found = problems(*SFT_EVAL, "stages.dpo.gate={metric: sft_eval/dpo/accuracy, min: 0.5}",
                     "stages.sft.gate={metric: nope/x, max: 1}", "stages.eval.gate={metric: sft_eval/sft/acc, min: 0}",
                     "stages.sft_eval.gate.metric=sft/train_loss")
    assert "stages.dpo.gate.metric: stage 'sft_eval' evaluates sft, not 'dpo'" in found
    assert any(f.startswith("stages.sft.gate.metric: 'nope' is not a stage of this pipeline") for f in found)
    assert any(f.startswith("stages.eval.gate.metric: 'acc' is not an eval metric") for f in found)
    assert "stages.sft_eval.gate: give `min`, `max` or both" in found
    # The planner orders with graphlib, which may report the cycle starting at either of its stages.
    assert any(f"cycle: {c}" in problems("stages.dpo.gate={metric: eval/sft/accuracy, min: 0.5}")
               for c in ("eval -> dpo -> eval", "dpo -> eval -> dpo"))


def test_eval_config_problems_are_reported_at_once(tmp_path):
    bad = tmp_path / "heldout.jsonl"
    bad.write_text('{"prompt": "add: 1+1", "answer": "2"}\n{"prompt": [], "answer": "x"}\n{"prompt": "x"}\n')
    found = problems(f"stages.eval.eval.tasks={bad}", "stages.eval.eval.checker._target_=demo.tasks.chek",
                     "stages.eval.models=[checkpoint,sft,sft]", "stages.eval.eval.max_rows=0",
                     "stages.eval.trainer.max_steps=3", "stages.eval.eval.pairs=/nope/pairs.jsonl")
    assert any("heldout.jsonl row 2: 'prompt' must be a string or a list" in f for f in found)
    assert any("heldout.jsonl row 3: 'answer'" in f for f in found)
    assert any(f.startswith("stages.eval.eval.checker._target_: module 'demo.tasks'") and "no 'chek'" in f
               for f in found)
    assert "stages.eval.models[2]: 'sft' is listed twice (metrics are named sft/...)" in found
    assert "stages.eval.eval.max_rows: must be a positive number, got 0" in found
    assert any(f.startswith("stages.eval.trainer: eval stages train nothing") for f in found)
    assert "stages.eval.eval.pairs: no such file '/nope/pairs.jsonl'" in found
    [missing] = problems("stages.eval.eval.checker._target_=no_such_package.check")
    assert "no module 'no_such_package'" in missing


def test_gate_stops_or_lets_a_stage_run(tmp_path):
    from workflows.launchers.local import gate_result

    p = plan(*SFT_EVAL, f"run_dir={tmp_path}", "stages.dpo.gate={metric: sft_eval/sft/accuracy, min: 0.5}")
    dpo = p.stage("dpo")

    def results(accuracy: float) -> dict[str, StageResult]:
        return {"sft_eval": StageResult("sft_eval", "eval", Status.COMPLETED, "", {},
                                        metrics={"sft/accuracy": accuracy})}

    assert gate_result(dpo, results(0.62)) is None
    gated = gate_result(dpo, results(0.31))
    assert gated.status == "gated" and gated.reason == "gate sft_eval/sft/accuracy=0.31 < min 0.5"
    assert gated.extra["gate"]["value"] == 0.31 and not gated.extra["gate"]["passed"]


def test_stage_process_refuses_to_start_when_its_gate_fails(tmp_path):
    from posttrain.gates import GATED_EXIT_CODE, enforce
    from posttrain.spec import GateSpec, StageSpec

    manifest = tmp_path / "sft_eval" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"metrics": {"sft/accuracy": 0.2}}))
    gate = GateSpec(metric="sft_eval/sft/accuracy", stage="sft_eval", key="sft/accuracy", min=0.5, max=None,
                    manifest=str(manifest))
    spec = StageSpec(name="dpo", type="dpo", stage_dir=str(tmp_path / "dpo"), model_dir=str(tmp_path / "dpo" / "model"),
                     seed=0, gate=gate)
    with pytest.raises(SystemExit) as exit_info:
        enforce(spec)
    assert exit_info.value.code == GATED_EXIT_CODE
    assert json.loads((tmp_path / "dpo" / "gated.json").read_text())["reason"].endswith("< min 0.5")
    manifest.write_text(json.dumps({"metrics": {"sft/accuracy": 0.7}}))
    enforce(spec)  # passes now, and forgets the old verdict
    assert not (tmp_path / "dpo" / "gated.json").exists()


def test_auto_lengths_are_measured_on_the_held_out_rows_and_printed():
    from posttrain.stage_types.eval import AUTO_SLACK

    evaluation = plan("stages.eval.eval.max_new_tokens=auto", "stages.eval.eval.max_length=auto").stage("eval")
    settings = evaluation.spec.settings
    # the demo's answers are a few tokens of the tiny tokenizer; prompt + answer a few dozen
    assert AUTO_SLACK < settings["max_new_tokens"] <= AUTO_SLACK + 12 and 20 < settings["max_length"] < 64
    assert any(n.startswith(f"eval lengths auto: max_new_tokens={settings['max_new_tokens']}, max_length=")
               for n in evaluation.notes)
    assert "stages.eval.eval.extract: 'last' is not one of none, first_line" in problems("stages.eval.eval.extract=last")
    assert "stages.eval.eval.max_length: give a number of tokens or auto, not 'long'" in problems(
        "stages.eval.eval.max_length=long")


def test_first_line_extraction_gives_the_checker_the_answer_of_a_chatty_model():
    from stages.eval import extract

    chatty = "\n68\nThe sum of 23 and 45 is 68 because..."
    assert extract(chatty, "first_line") == "68" and extract(chatty, "none") == chatty

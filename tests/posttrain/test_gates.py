"""Gates (posttrain/gates.py): the verdict and its reason from an upstream stage's metrics, and the
stage process that refuses to start on a failed gate, leaving gated.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

from posttrain.artifacts import GATED_FILE, MANIFEST
from posttrain.gates import GATED_EXIT_CODE, enforce, judge, read_verdict
from posttrain.spec import GateSpec, StageSpec

GATE = GateSpec(metric="sft_eval/sft/accuracy", stage="sft_eval", key="sft/accuracy", manifest="unused", min=0.5)


def test_gate_verdicts_and_reasons():
    gate = GATE
    failed = judge(gate, {"sft/accuracy": 0.31})
    assert not failed.passed and failed.reason == "gate sft_eval/sft/accuracy=0.31 < min 0.5"
    assert judge(gate, {"sft/accuracy": 0.5}).passed
    missing = judge(gate, {"sft/ppl": 2.0})
    assert not missing.passed and "did not report 'sft/accuracy'" in missing.reason and "sft/ppl" in missing.reason
    upper = judge(dataclasses.replace(gate, min=None, max=3.0, key="sft/ppl", metric="sft_eval/sft/ppl"),
                  {"sft/ppl": 4.0})
    assert upper.reason == "gate sft_eval/sft/ppl=4 > max 3"
    assert not judge(gate, {"sft/accuracy": float("nan")}).passed


def test_the_stage_process_enforces_its_gate_on_the_manifest_on_disk(tmp_path, capsys):
    manifest = tmp_path / "sft_eval" / MANIFEST
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"metrics": {"sft/accuracy": 0.31}}))
    stage_dir = tmp_path / "dpo"
    stage_dir.mkdir()
    spec = StageSpec(name="dpo", type="dpo", stage_dir=str(stage_dir), model_dir=str(stage_dir / "model"), seed=0,
                     gate=dataclasses.replace(GATE, manifest=str(manifest)))
    with pytest.raises(SystemExit) as exit_:
        enforce(spec)
    assert exit_.value.code == GATED_EXIT_CODE
    assert "[dpo] gate sft_eval/sft/accuracy=0.31 < min 0.5; not running" in capsys.readouterr().out
    verdict = read_verdict(str(stage_dir))
    assert verdict is not None and verdict["passed"] is False and verdict["value"] == 0.31
    assert verdict["reason"] == "gate sft_eval/sft/accuracy=0.31 < min 0.5"

    manifest.write_text(json.dumps({"metrics": {"sft/accuracy": 0.8}}))  # the upstream stage ran again
    enforce(spec)  # passes: returns
    assert not (stage_dir / GATED_FILE).exists() and read_verdict(str(stage_dir)) is None
    enforce(dataclasses.replace(spec, gate=None))  # no gate: nothing to check

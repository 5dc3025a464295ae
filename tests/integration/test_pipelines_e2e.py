"""The tiny pipelines train for real, end to end, through the CLI (few steps each)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import fast_overrides, read_summary, run_cli

pytestmark = pytest.mark.slow


def weights(model_dir: str) -> dict:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def digest(model_dir: str) -> str:
    """sha256 over (name, float32 bytes) in name order, computed here from the saved file."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(weights(model_dir).items()):
        h.update(name.encode())
        h.update(tensor.float().contiguous().numpy().tobytes())
    return h.hexdigest()


def changed(before: str, after: str) -> bool:
    a, b = weights(before), weights(after)
    assert a.keys() == b.keys()
    return any(not (a[k] == b[k]).all() for k in a)


@pytest.fixture(scope="module")
def branches(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("e2e") / "sft_dpo_kto"
    proc = run_cli("+pipeline=sft_dpo_kto", f"run_dir={run_dir}", "tracking=none", *fast_overrides("sft_dpo_kto"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


def test_every_stage_completes_and_reports(branches):
    summary = read_summary(branches)
    assert [summary[n]["status"] for n in ("checkpoint", "sft", "dpo", "kto")] == ["completed"] * 4
    for name in ("sft", "dpo", "kto"):
        stage = summary[name]
        assert stage["wall_seconds"] > 0 and "train_loss" in stage["metrics"]
        assert stage["output_dir"] == os.path.realpath(branches / name / "model")  # its store entry
    assert "eval_rewards/accuracies" in summary["dpo"]["metrics"]


def test_preference_stages_start_from_and_refer_to_the_sft_output(branches):
    summary = read_summary(branches)
    sft_out = summary["sft"]["output_dir"]
    for name in ("dpo", "kto"):
        assert summary[name]["inputs"]["policy_init"] == sft_out
        assert summary[name]["inputs"]["reference_model"] == sft_out
        manifest = json.loads((branches / name / "manifest.json").read_text())
        # the weights the stage started from are exactly the SFT stage's final weights
        assert manifest["initial_weights_digest"] == digest(sft_out)
        assert manifest["reference_note"].startswith(sft_out)


def test_weights_change_in_every_training_stage(branches):
    out = {n: str(branches / n / "model") for n in ("checkpoint", "sft", "dpo", "kto")}
    assert changed(out["checkpoint"], out["sft"])
    assert changed(out["sft"], out["dpo"])
    assert changed(out["sft"], out["kto"])


def test_saved_models_are_plain_hf_dirs_with_chat_template(branches):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("sft", "dpo"):
        model_dir = branches / name / "model"
        AutoModelForCausalLM.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        assert "{% generation %}" in tokenizer.chat_template


@pytest.mark.parametrize("pipeline", ["sft_dpo", "sft_kto"])
def test_linear_pipelines_are_the_branched_runs_stages(pipeline, branches, tmp_path):
    """sft_dpo and sft_kto are sft_dpo_kto's branches: in another run_dir they train nothing and link the
    same store entries; only their eval, which compares other models, is a stage of its own."""
    proc = run_cli(f"+pipeline={pipeline}", f"run_dir={tmp_path}", "tracking=none", *fast_overrides(pipeline))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = read_summary(tmp_path)
    trained = [n for n in summary if n != "eval"]
    assert {n: summary[n]["status"] for n in trained} == {n: "cached" for n in trained}
    for name in trained:
        assert os.path.realpath(tmp_path / name) == os.path.realpath(branches / name)
    assert summary["eval"]["status"] == "completed"
    assert os.path.realpath(tmp_path / "eval") != os.path.realpath(branches / "eval")


def test_lora_hand_off_merges_and_uses_the_disabled_adapter_as_reference(tmp_path):
    proc = run_cli("+pipeline=sft_dpo", f"run_dir={tmp_path}", "tracking=none", "peft=lora", "peft.r=4",
                   *fast_overrides("sft_dpo"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sft_out, dpo_out = (os.path.realpath(tmp_path / n / "model") for n in ("sft", "dpo"))  # store entries
    assert (tmp_path / "sft" / "adapter" / "adapter_config.json").exists()
    assert not (Path(sft_out) / "adapter_config.json").exists()  # merged: a plain model dir
    manifest = json.loads((tmp_path / "dpo" / "manifest.json").read_text())
    assert manifest["initial_weights_digest"] == digest(sft_out)
    assert "adapter disabled" in manifest["reference_note"] and manifest["reference_note"].startswith(sft_out)
    assert changed(str(tmp_path / "checkpoint" / "model"), sft_out) and changed(sft_out, dpo_out)


def test_a_failed_stage_skips_its_dependents_and_fails_the_command(tmp_path):
    # a valid optimizer whose package (bitsandbytes) the stage lacks: it passes planning, fails at run time
    proc = run_cli("+pipeline=sft_dpo", f"run_dir={tmp_path}", "tracking=none", *fast_overrides("sft_dpo"),
                   "stages.sft.trainer.optim=adamw_bnb_8bit")
    assert proc.returncode == 1
    summary = read_summary(tmp_path)
    assert summary["sft"]["status"] == "failed" and "stage.log" in summary["sft"]["reason"]
    assert summary["dpo"]["status"] == "skipped" and "upstream 'sft' failed" in summary["dpo"]["reason"]
    assert not (tmp_path / "dpo" / "stage.log").exists()

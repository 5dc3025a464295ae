"""DeepSpeed on 2 CPU processes (gloo): SFT and DPO each under ZeRO-2 and ZeRO-3, every stage
loading what the one before saved.

One run of one chain serves every assertion (the most CPU-expensive test of the suite):
  checkpoint -> sft (ZeRO-2) -> dpo (ZeRO-3, reference sharded too) -> sft_z3 (ZeRO-3 + LoRA,
  merged from the gathered adapter) -> dpo_z2 (ZeRO-2, reference log-probs precomputed by 2 ranks)
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.conftest import read_summary, run_cli
from workflows.config import compose

pytestmark = pytest.mark.slow

CHAIN = {"sft": ("sft", None, "zero2", None), "dpo": ("dpo", "sft", "zero3", None),
         "sft_z3": ("sft", "dpo", "zero3", "lora"), "dpo_z2": ("dpo", "sft_z3", "zero2", None)}
STEPS = 3


def chain_overrides(run_dir: Path) -> list[str]:
    extra = [n for n in compose(["+pipeline=sft_dpo"]).stages if n not in CHAIN]  # stages the pipeline may grow
    out = [f"run_dir={run_dir}", "tracking=none", "launcher.stream_logs=false",
           *[f"stages.{n}.enabled=false" for n in extra]]
    for name, (stype, policy, zero, peft) in CHAIN.items():
        data = "sft_demo" if stype == "sft" else "prefs_demo"
        if name not in ("sft", "dpo"):
            out += [f"+stage@stages.{name}={stype}", f"+data@stages.{name}.data={data}", f"stages.{name}.policy={policy}"]
        out += [f"+deepspeed@stages.{name}.deepspeed={zero}", f"stages.{name}.resources.processes_per_node=2",
                f"stages.{name}.data.sources.0.max_rows=96", f"stages.{name}.data.eval_sources=[]",
                f"stages.{name}.trainer.max_steps={STEPS}", f"stages.{name}.trainer.logging_steps=1",
                f"stages.{name}.trainer.per_device_train_batch_size=8", f"stages.{name}.trainer.save_steps=100"]
        if stype == "dpo":  # plain sigmoid: at step 1 the loss is exactly ln 2 (see the last test)
            out.append(f"stages.{name}.trainer.loss_type=[sigmoid]")
        if peft:
            out.append(f"+peft@stages.{name}.peft={peft}")
    return [*out, "stages.dpo_z2.trainer.precompute_ref_log_probs=true"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("deepspeed") / "run"
    cache = run_dir.parent / "cache"  # a fresh cache: the reference log-probs are computed, not reused
    result = run_cli("+pipeline=sft_dpo", *chain_overrides(run_dir), timeout=1200,
                     env={"POSTTRAIN_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def load(model_dir: Path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(model_dir, output_loading_info=True)
    return model, info


def test_every_stage_trained_on_two_processes(chain: Path):
    summary = read_summary(chain)
    assert {n: summary[n]["status"] for n in CHAIN} == {n: "completed" for n in CHAIN}
    for name, (_, _, zero, _) in CHAIN.items():
        m = manifest(chain, name)
        assert m["world_size"] == 2, name
        assert json.loads((chain / name / "deepspeed.json").read_text())["zero_optimization"]["stage"] == int(zero[-1])
        assert m["metrics"]["global_step"] == STEPS


def test_each_stage_starts_from_the_weights_the_one_before_saved(chain: Path):
    from stages.lib.models import model_digest

    for name, (_, policy, _, _) in CHAIN.items():
        upstream_dir = chain / (policy or "checkpoint") / "model"
        saved, _ = load(upstream_dir)
        assert manifest(chain, name)["initial_weights_digest"] == model_digest(saved), \
            f"{name} did not start from {upstream_dir}"
        trained, _ = load(chain / name / "model")
        assert model_digest(trained) != model_digest(saved), f"{name} saved unchanged weights"


def test_zero3_saves_full_weights_plain_from_pretrained_can_load(chain: Path):
    import torch

    reference, _ = load(chain / "checkpoint" / "model")
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    for name in ("dpo", "sft_z3"):  # full fine-tune and LoRA merged from the gathered adapter
        model, info = load(chain / name / "model")
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], (name, info)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes, name
        assert all(torch.isfinite(p).all() and p.abs().sum() > 0 for p in model.parameters()), name
    assert (chain / "sft_z3" / "adapter" / "adapter_model.safetensors").is_file()


def test_the_sharded_reference_is_the_policys_starting_model(chain: Path):
    """At step 1 policy and reference are the same weights, so DPO's sigmoid loss is exactly ln 2;
    a reference whose ZeRO-3 shards were empty or random (or log-probs one rank never received)
    would give another value."""
    assert manifest(chain, "dpo_z2")["ref_logps_cache"]["train"]["hit"] is False
    for name in ("dpo", "dpo_z2"):
        log = (chain / name / "stage.log").read_text()
        first = re.search(rf"\[{name}\] step 1/{STEPS}\s+loss (\S+)", log)
        assert first, log[-2000:]
        assert math.isclose(float(first.group(1)), math.log(2), abs_tol=2e-3), (name, first.group(0))

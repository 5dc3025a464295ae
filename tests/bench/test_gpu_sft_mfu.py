"""bench/gpu_sft_mfu.py on a machine without a GPU: its arithmetic (parameters, FLOPs per token, MFU,
the peak table), its skip report, and (slow) the measured code path on a tiny CPU model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import gpu_sft_mfu
from bench.gpu_sft_mfu import (MODEL_05B, MODEL_SMOKE, SKIP_REASON, flops_per_token, matmul_parameters, mfu_percent,
                               peak_tflops)
from tests.conftest import ROOT


def llama(config: dict):
    """The benchmark's model, on the meta device: shapes only, no memory, no time."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**config, pad_token_id=0, bos_token_id=1, eos_token_id=2))


# Counted by hand from the configs (Llama: no biases; k/v projections full width, as kv heads == heads):
# per layer 4 h^2 (q, k, v, o) + 3 h i (gate, up, down) + 2 h (two RMSNorms); then the final norm h and
# the untied lm_head vocab * h. The input embedding (vocab * h) is a lookup: not in N.
N_05B = 24 * (4 * 1024**2 + 3 * 1024 * 4096 + 2 * 1024) + 1024 + 32000 * 1024
N_SMOKE = 2 * (4 * 64**2 + 3 * 64 * 128 + 2 * 64) + 64 + 512 * 64


def test_n_leaves_out_only_the_input_embedding():
    assert N_05B == 435_471_360 and N_SMOKE == 115_008
    for config, expected in ((MODEL_05B, N_05B), (MODEL_SMOKE, N_SMOKE)):
        model = llama(config)
        assert matmul_parameters(model) == expected
        assert sum(p.numel() for p in model.parameters()) == expected + config["vocab_size"] * config["hidden_size"]


def test_flops_per_token_is_6n():
    assert flops_per_token(N_05B) == 6 * 435_471_360 == 2_612_828_160  # ~2.6 GFLOP per trained token


def test_mfu_is_model_flops_over_the_peak():
    # 1e9 matmul parameters at 25k tokens/s: 6e9 * 2.5e4 = 1.5e14 FLOP/s, half of a 300 TFLOP/s peak
    assert mfu_percent(1_000_000_000, 25_000.0, 300.0) == pytest.approx(50.0)
    # the 0.5B model at 100k tokens/s on an H100 (989 TFLOP/s): 2.6128e9 * 1e5 / 9.89e14
    assert mfu_percent(N_05B, 100_000.0, 989.0) == pytest.approx(26.4189, abs=1e-4)
    assert mfu_percent(N_05B, 100_000.0, None) is None  # an unknown GPU: no MFU, not a made-up one


def test_peak_table_matches_the_most_specific_name_first():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 NVL") == 835.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA A10G") == 70.0 and peak_tflops("NVIDIA A10") == 125.0
    assert peak_tflops("Some Future GPU") is None


def test_without_a_gpu_it_reports_why_and_writes_a_skipped_result(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine that has one
    gpu_sft_mfu.main(["--quick", "--out", str(tmp_path)])
    assert SKIP_REASON in capsys.readouterr().out
    assert SKIP_REASON.startswith("no CUDA device")
    result = json.loads((tmp_path / "gpu_sft_mfu.json").read_text())
    assert result["skipped"] == SKIP_REASON and result["rows"] == [] and result["quick"] is True
    assert result["headlines"] == [{"metric": "MFU, 0.5B Llama, bf16, packing", "value": None, "target": ">= 45%",
                                    "met": None}]


@pytest.mark.slow
def test_cpu_smoke_measures_both_variants_and_computes_their_mfu(tmp_path):
    """The path a GPU run takes (a subprocess per variant, TRL's token counts, the table), on a tiny model;
    a made-up peak of 1 TFLOP/s makes it compute MFU from what it measured."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_sft_mfu", "--cpu-smoke", "--peak-tflops", "1",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_sft_mfu.json").read_text())
    assert "skipped" not in result and result["smoke"] is True and result["peak_tflops"] == 1.0
    assert result["model"] == MODEL_SMOKE
    assert [row["variant"] for row in result["rows"]] == ["padded", "packing"]
    for row in result["rows"]:
        [measured] = result["results"][row["variant"]]
        assert measured["matmul_parameters"] == N_SMOKE and measured["device"] == "cpu (smoke)"
        assert measured["steps_timed"] == 3  # 4 steps, the first one left out as warm-up
        assert row["tokens_per_s"] == measured["tokens_per_s"] > 0 and row["tokens_per_step"] > 0
        assert row["mfu_percent"] == pytest.approx(100 * 6 * N_SMOKE * row["tokens_per_s"] / 1e12)
    [best] = result["headlines"]
    assert best["metric"].startswith("MFU, best variant (") and best["value"] == max(
        row["mfu_percent"] for row in result["rows"])
    assert "padded:" in proc.stdout and "tokens/s" in proc.stdout

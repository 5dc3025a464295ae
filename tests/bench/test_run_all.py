"""The benchmarks keep working: their helpers, and every benchmark's quick mode end to end (bench/run_all.py).

No timing is asserted anywhere: the quick sizes are too small for the numbers to mean anything,
and CI machines are noisy. What is checked: each benchmark prints its table and writes JSON with
the keys a reader of bench/results/ relies on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import headline, interleave, print_table, run
from bench.gpu_sft_mfu import SKIP_REASON, mfu_percent
from bench.planning import heavy_imports

ROOT = Path(__file__).resolve().parents[2]
COMMON_KEYS = {"name", "command", "quick", "repeats", "environment", "rows", "headlines"}
# benchmark -> (row labels that must appear, headline metrics that must appear)
EXPECTED = {
    "planning": ({"dry_run (warm caches)", "dry_run (cold caches)", "import trl"}, 2),
    "cached_rerun": ({"cached re-run, tracking=none", "cached re-run, tracking=mlflow"}, 2),
    "overhead": ({"total wall time", "sft: training loop", "orchestrator (outside stage processes)"}, 2),
    "packing": ({"padded", "packing (bfd, padding-free)", "padding-free, no packing"}, 2),
    "dpo_memory": ({"full fine-tune, live reference", "LoRA r=16, adapter-disabled reference",
                    "full fine-tune, precomputed reference", "LoRA r=16, precomputed reference"}, 3),
    "deepspeed_step": ({"DDP (deepspeed=none)", "ZeRO-2", "ZeRO-3"}, 0),
    "sweep": ({"-m sweep, 2 DPO variants (SFT once)", "2 separate pipelines (SFT each)"}, 2),
}


def test_run_reports_exit_code_wall_time_and_peak_memory():
    allocate = "x = bytearray(200 * 1024 * 1024); import sys; sys.exit(3)"
    result = run([sys.executable, "-c", allocate], check=False)
    assert result.returncode == 3
    assert result.wall_s > 0
    assert result.maxrss_mb >= 200  # the child's peak, from wait4


def test_interleave_alternates_the_variants():
    order: list[str] = []
    out = interleave({"a": lambda i: order.append("a") or i, "b": lambda i: order.append("b") or -i}, 3)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert out == {"a": [0, 1, 2], "b": [0, -1, -2]}


def test_headline_and_table():
    assert headline("ratio", 1.02, "<=", 1.03)["met"] is True
    assert headline("ratio", 1.6, ">=", 1.5)["met"] is True
    assert headline("ratio", 0.7, "<=", 0.6)["met"] is False
    assert headline("mfu", None, ">=", 45, "%") == {"metric": "mfu", "value": None, "target": ">= 45%", "met": None}


def test_heavy_imports_reads_importtime_output():
    output = ("import time: self [us] | cumulative | imported package\n"
              "import time:       120 |        120 |   yaml\n"
              "import time:      5000 |      90000 | torch\n"
              "import time:        10 |         10 |     torch.nn\n")
    assert heavy_imports(output) == ["torch"]


def test_print_table(capsys):
    print_table("t", [{"variant": "a", "median_s": 1.23456, "met": True}, {"variant": "bb", "median_s": None,
                                                                            "met": False}])
    out = capsys.readouterr().out
    assert "variant" in out and "1.23" in out and "yes" in out and "no" in out


@pytest.mark.slow
def test_every_benchmark_runs_in_quick_mode(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "bench.run_all", "--quick", "--jobs", "2", "--out", str(out)]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for name, (labels, n_headlines) in EXPECTED.items():
        data = json.loads((out / f"{name}.json").read_text())
        assert COMMON_KEYS <= set(data), name
        assert data["quick"] is True and data["name"] == name
        assert labels <= {next(iter(row.values())) for row in data["rows"]}, name  # first column: the label
        assert len(data["headlines"]) == n_headlines, name
        for h in data["headlines"]:
            assert {"metric", "value", "target", "met"} <= set(h)
        assert f"\n{name} (quick" in proc.stdout  # its table was printed
    cached = json.loads((out / "cached_rerun.json").read_text())
    assert cached["problems"] == []  # every stage cached, nothing started, no model loaded
    assert json.loads((out / "sweep.json").read_text())["problems"] == []  # the sweep trained its SFT once
    gpu = json.loads((out / "gpu_sft_mfu.json").read_text())
    assert COMMON_KEYS <= set(gpu)
    import torch

    if torch.cuda.is_available():  # it measured: every variant's throughput, and MFU where the peak is known
        assert "skipped" not in gpu and {"padded", "packing"} <= {row["variant"] for row in gpu["rows"]}
        for row in gpu["rows"]:
            assert row["tokens_per_s"] > 0
            assert row["mfu_percent"] == mfu_percent(gpu["results"][row["variant"]][0]["matmul_parameters"],
                                                     row["tokens_per_s"], gpu["peak_tflops"])
    else:  # it says why it did not run, on the console and in its result (tests/bench/test_gpu_sft_mfu.py: its math)
        assert gpu["skipped"] == SKIP_REASON and SKIP_REASON in proc.stdout and gpu["rows"] == []
    data_validation = json.loads((out / "data_validation.json").read_text())
    assert data_validation["cases"]
    summary = json.loads((out / "run_all.json").read_text())
    assert all(r["exit_code"] == 0 for r in summary["runs"])
    assert "summary (quick" in proc.stdout

"""GPU SFT throughput and model FLOPs utilisation (MFU) of a ~0.5B Llama built from config, bf16,
one GPU, with and without packing and Liger kernels (when `liger_kernel` is importable).

    python -m bench.gpu_sft_mfu [--quick] [--steps 30] [--peak-tflops 989]

Without a CUDA device it says so, writes bench/results/gpu_sft_mfu.json with `skipped`, and exits 0.
Each variant runs in its own process (Liger patches model classes; memory starts clean): TRL's
SFTTrainer on pre-tokenized synthetic rows of log-normal lengths (median 512, up to 2048 tokens),
vocabulary 32000. Throughput is real tokens (TRL's `num_tokens`) per second over the steps after
the warm-up; MFU = 6 * N * tokens/s / peak bf16 FLOP/s, N = parameters without the input
embedding (the 6N rule leaves attention's own FLOPs out, so MFU is slightly understated).
Attention is FlashAttention-2 when `flash_attn` is importable (packing then runs varlen kernels),
else SDPA. `--cpu-smoke` runs a tiny model on CPU to check the code path; it measures nothing.
Target: >= 45% MFU on an H100.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import sys
import time
from typing import Any

from bench.common import ROOT, headline, median, parse, python, run

# Dense bf16 tensor-core peak (no sparsity), from the vendors' data sheets; --peak-tflops overrides.
PEAK_TFLOPS = [("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0),
               ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
               ("RTX 4090", 165.0)]
MODEL_05B = {"vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
             "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 4096,
             "tie_word_embeddings": False}
MODEL_SMOKE = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512}
TOKENIZER = ROOT / "demo" / "tiny_tokenizer"  # supplies the pad token only: rows are token ids
SKIP_REASON = "no CUDA device: this benchmark needs a GPU and was not run"


def peak_tflops(device_name: str) -> float | None:
    return next((tflops for key, tflops in PEAK_TFLOPS if key in device_name), None)


def matmul_parameters(model: Any) -> int:
    """N of the 6N rule: every parameter but the input embedding (a lookup, not a matmul)."""
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def flops_per_token(n_matmul: int) -> float:
    """Training FLOPs per token by the 6N rule: forward 2N, backward 4N (attention's own FLOPs left out)."""
    return 6.0 * n_matmul


def mfu_percent(n_matmul: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in percent of a `peak` TFLOP/s device; None when the peak is unknown."""
    return 100 * flops_per_token(n_matmul) * tokens_per_s / (peak * 1e12) if peak else None


def synthetic_rows(n: int, vocab: int, max_length: int, median_len: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = int(min(max_length, max(16, rng.lognormvariate(math.log(median_len), 0.8))))
        rows.append({"input_ids": [rng.randrange(3, vocab) for _ in range(length)]})
    return rows


def measure(variant: dict[str, Any]) -> dict[str, Any]:
    """One variant in this process: train `steps` steps, return throughput over the post-warm-up steps."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    smoke = variant["smoke"]
    on_gpu = torch.cuda.is_available() and not smoke
    model_kwargs = MODEL_SMOKE if smoke else MODEL_05B
    max_length = 256 if smoke else 2048
    attn = "flash_attention_2" if on_gpu and importlib.util.find_spec("flash_attn") else "sdpa"
    torch.manual_seed(0)
    config = LlamaConfig(**model_kwargs, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    model = LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=dtype)
    n_matmul = matmul_parameters(model)
    batch = variant["batch"]
    steps = variant["steps"]
    mean_len = 64 if smoke else 640  # roughly the mean of the log-normal rows below
    rows_needed = steps * batch * (max_length // mean_len + 1 if variant["packing"] else 1) + 64
    data = Dataset.from_list(synthetic_rows(rows_needed, config.vocab_size, max_length, 48 if smoke else 512))
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    args = SFTConfig(output_dir=variant["output_dir"], max_steps=steps, per_device_train_batch_size=batch,
                     max_length=max_length, packing=variant["packing"], learning_rate=1e-4, logging_steps=1,
                     save_strategy="no", report_to="none", disable_tqdm=True, bf16=on_gpu, use_cpu=not on_gpu,
                     use_liger_kernel=variant["liger"], gradient_checkpointing=False, dataloader_num_workers=2,
                     seed=0)

    marks: dict[int, float] = {}
    tokens: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if on_gpu:
                torch.cuda.synchronize()
            marks[state.global_step] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                tokens[state.global_step] = float(logs["num_tokens"])

    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    warm = variant["warmup"]
    last = max(marks)
    seconds = marks[last] - marks[warm]
    real_tokens = tokens[last] - tokens[warm]
    per_s = real_tokens / seconds
    out = {"tokens_per_s": per_s, "steps_timed": last - warm, "tokens_per_step": real_tokens / (last - warm),
           "step_s": median([marks[s] - marks[s - 1] for s in range(warm + 1, last + 1)]),
           "parameters": sum(p.numel() for p in model.parameters()), "matmul_parameters": n_matmul,
           "attention": attn, "device": torch.cuda.get_device_name() if on_gpu else "cpu (smoke)",
           "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None}
    return out


def child(argv: list[str]) -> None:
    """`--variant <json>`: measure one variant, print one JSON line prefixed RESULT."""
    variant = json.loads(argv[argv.index("--variant") + 1])
    print("RESULT " + json.dumps(measure(variant)), flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per variant (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing (default 5)")
    parser.add_argument("--batch", type=int, default=8, help="rows per step when padded (default 8)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, when not in "
                        "the built-in table")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU: checks the code path only")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--variant" in argv:
        return child(argv)
    bench, args = parse("gpu_sft_mfu", __doc__.splitlines()[0], argv, repeats=1, add_arguments=add_arguments)
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(SKIP_REASON)
        bench.finish([], [headline("MFU, 0.5B Llama, bf16, packing", None, ">=", 45, "%")], skipped=SKIP_REASON)
        return
    smoke = args.cpu_smoke
    steps, warmup = (4, 1) if smoke or bench.quick else (args.steps, args.warmup)
    liger = importlib.util.find_spec("liger_kernel") is not None and not smoke
    # Packed rows are max_length long: fewer per step keeps the tokens per step comparable.
    packed_batch = max(1, round(args.batch * 640 / 2048)) if not smoke else 2
    variants = {"padded": {"packing": False, "liger": False, "batch": args.batch},
                "packing": {"packing": True, "liger": False, "batch": packed_batch}}
    if liger:
        variants["padded + Liger"] = {"packing": False, "liger": True, "batch": args.batch}
        variants["packing + Liger"] = {"packing": True, "liger": True, "batch": packed_batch}
    device = "cpu (smoke)" if smoke else torch.cuda.get_device_name()
    peak = args.peak_tflops or (None if smoke else peak_tflops(device))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(bench.repeats):
        for name, variant in variants.items():
            spec = {**variant, "steps": steps, "warmup": warmup, "smoke": smoke,
                    "output_dir": str(bench.workdir / f"{name}-{i}".replace(" ", ""))}
            output = run(python("-m", "bench.gpu_sft_mfu", "--variant", json.dumps(spec)), env=bench.env()).output
            line = next(l for l in reversed(output.splitlines()) if l.startswith("RESULT "))
            results[name].append(json.loads(line[len("RESULT "):]))
            print(f"  {name}: {results[name][-1]['tokens_per_s']:.0f} tokens/s", flush=True)
    rows = []
    for name, rs in results.items():
        per_s = median([r["tokens_per_s"] for r in rs])
        mfu = mfu_percent(rs[0]["matmul_parameters"], per_s, peak)
        rows.append({"variant": name, "tokens_per_s": per_s, "mfu_percent": mfu, "step_s": median([r["step_s"] for r in rs]),
                     "tokens_per_step": rs[0]["tokens_per_step"], "peak_memory_gb": rs[0]["peak_memory_gb"],
                     "attention": rs[0]["attention"]})
    best = max(rows, key=lambda r: r["tokens_per_s"])
    print(f"\ndevice: {device}; peak {peak or '?'} TFLOP/s bf16; model "
          f"{results['padded'][0]['parameters'] / 1e6:.0f}M parameters; Liger {'on' if liger else 'not installed'}")
    bench.finish(rows, [headline(f"MFU, best variant ({best['variant']})", best["mfu_percent"], ">=", 45, "%")],
                 device=device, peak_tflops=peak, liger_available=liger, results=results, smoke=smoke,
                 model=MODEL_SMOKE if smoke else MODEL_05B)


if __name__ == "__main__":
    main()

"""DeepSpeed ZeRO-2 vs. ZeRO-3 vs. plain DDP: SFT step time and per-process peak memory with two
processes on one machine (on CPU: gloo), through the SFT stage.

    python -m bench.deepspeed_step [--quick] [--repeats 2]

Each variant runs `python -m workflows.run +pipeline=sft_dpo` with only the SFT stage,
`stages.sft.resources.processes_per_node=2` and `deepspeed=none|zero2|zero3`, from the same Llama
built from config (~57M parameters: weights, gradients and Adam state ~0.9 GB per process
under DDP), for a fixed number of steps. Step time is the median over
the steps after the first two (start-up, allocator warm-up), per-process memory the peak
resident set of each rank up to the end of training, both read by bench/observer. No target: the
numbers say what sharding costs and saves at this size; on one CPU machine ZeRO's communication
is all overhead, and memory per process falls with each stage of sharding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import (
    Bench, build_checkpoint, disable, median, parameters, parse, pipeline, progress, run, stage_observations,
    step_durations,
)

FULL = {"model": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 8, "num_attention_heads": 12,
                  "num_key_value_heads": 12},  # bench/dpo_memory.py's model: states dominate the process
        "steps": 12, "batch": 8}
QUICK = {"model": {}, "steps": 3, "batch": 4}
VARIANTS = {"DDP (deepspeed=none)": "none", "ZeRO-2": "zero2", "ZeRO-3": "zero3"}
WARM_STEPS = 2  # left out of the step time


def run_variant(bench: Bench, model_dir: Path, deepspeed: str, size: dict[str, Any], tag: str) -> dict[str, Any]:
    run_dir, observe = bench.workdir / tag, bench.workdir / f"{tag}-observe"
    args = ["+pipeline=sft_dpo", "tracking=none", f"run_dir={run_dir}", "model=hf", f"model.name_or_path={model_dir}",
            *disable("sft_dpo", "dpo", "eval", "kto"), f"deepspeed={deepspeed}",
            "stages.sft.resources.processes_per_node=2", "stages.sft.data.eval_sources=[]",
            f"stages.sft.trainer.max_steps={size['steps']}", f"stages.sft.trainer.per_device_train_batch_size={size['batch']}",
            "stages.sft.trainer.save_strategy=no", "stages.sft.trainer.logging_steps=1", "stages.sft.trainer.warmup_steps=0"]
    result = run(pipeline(*args), env=bench.env(observe=observe))
    ranks = stage_observations(observe, "sft")
    if len(ranks) != 2:
        raise RuntimeError(f"expected 2 training processes, observed {len(ranks)}")
    def later(observation: dict[str, Any]) -> list[dict[str, float]]:
        durations = step_durations(observation)
        return durations[WARM_STEPS:] or durations

    return {"step_s": median([d["seconds"] for d in later(ranks[0])]),
            "step_cpu_s": median([median([d["cpu_seconds"] for d in later(o)]) for o in ranks]),
            "rank_peak_mb": [o["maxrss_mb_train_end"] for o in ranks],
            "wall_s": result.wall_s}


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("deepspeed_step", __doc__.splitlines()[0], argv, repeats=2)
    size = QUICK if bench.quick else FULL
    model_dir = build_checkpoint(bench, size["model"])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for i in range(bench.repeats):  # A B C A B C ...
        for j, (name, group) in enumerate(VARIANTS.items()):
            with progress(f"repeat {i + 1}/{bench.repeats}: {name}"):
                results[name].append(run_variant(bench, model_dir, group, size, f"v{j}-{i}"))
    ddp_step = median([r["step_s"] for r in results["DDP (deepspeed=none)"]])
    ddp_mem = median([max(r["rank_peak_mb"]) for r in results["DDP (deepspeed=none)"]])
    rows = []
    for name, rs in results.items():
        step = median([r["step_s"] for r in rs])
        peak = median([max(r["rank_peak_mb"]) for r in rs])
        rows.append({"variant": name, "step_s": step, "step_vs_ddp": step / ddp_step,
                     "step_cpu_s_per_rank": median([r["step_cpu_s"] for r in rs]),
                     "peak_rss_per_process_mb": peak, "memory_vs_ddp": peak / ddp_mem,
                     "rank_peaks_mb": [round(m) for m in rs[-1]["rank_peak_mb"]],
                     "stage_wall_s": median([r["wall_s"] for r in rs])})
    n_params = parameters(model_dir)
    print(f"\nmodel: {n_params / 1e6:.1f}M parameters; 2 processes, batch {size['batch']} each, {size['steps']} steps")
    bench.finish(rows, [], results=results, model_parameters=n_params, size=size)


if __name__ == "__main__":
    main()

"""DPO memory and step time through the DPO stage: LoRA with the adapter-disabled policy as the
reference vs. a full fine-tune with a separate reference copy; and, for the full fine-tune, the
step time of epoch 2+ with precomputed reference log-probs vs. a live reference forward.

    python -m bench.dpo_memory [--quick] [--repeats 2]

Three variants, interleaved, each `python -m workflows.run +pipeline=sft_dpo` with only the DPO
stage, for a few epochs over the same preference pairs, from the same Llama built from config
(~57M parameters: large enough that weights, gradients, optimizer state and the reference
dominate the process, small enough for a CPU):
  full fine-tune, live reference       a second copy of the model as the reference (TRL loads it)
  LoRA r=16, adapter-disabled reference  the policy with its adapter switched off is the reference
  full fine-tune, precomputed reference  reference log-probs computed once before training
  LoRA r=16, precomputed reference     the same with LoRA: no reference forward during training
Memory is the peak resident set of the DPO stage process up to the end of training (CPU: RSS
stands in for GPU memory); the floor every such process pays (python + torch + TRL imported) is
measured too and reported beside it. Step time is the median of the steps after the first epoch.
Both come from bench/observer. Targets: LoRA / full peak memory <= 0.6; precomputed / live
reference step time (epoch 2+) <= 0.7, for the full fine-tune and for LoRA. (The full fine-tune's
floor is 0.75 in FLOPs: a reference forward is about a quarter of a step's forward + backward.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import (
    ROOT, Bench, build_checkpoint, disable, headline, median, parameters, parse, pipeline, progress, python, ratio,
    run, stage_observations, step_durations,
)

FULL = {"model": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 8, "num_attention_heads": 12,
                  "num_key_value_heads": 12},
        "rows": 32, "batch": 4, "epochs": 3}
QUICK = {"model": {}, "rows": 8, "batch": 4, "epochs": 2}
IMPORTS = "import torch, transformers, peft, trl; from trl import DPOTrainer"
FULL_LIVE, LORA, FULL_PRECOMPUTED, LORA_PRECOMPUTED = (
    "full fine-tune, live reference", "LoRA r=16, adapter-disabled reference",
    "full fine-tune, precomputed reference", "LoRA r=16, precomputed reference")
VARIANTS = {FULL_LIVE: ["peft=none", "stages.dpo.trainer.precompute_ref_log_probs=false"],
            LORA: ["peft=lora", "stages.dpo.trainer.precompute_ref_log_probs=false"],
            FULL_PRECOMPUTED: ["peft=none", "stages.dpo.trainer.precompute_ref_log_probs=true"],
            LORA_PRECOMPUTED: ["peft=lora", "stages.dpo.trainer.precompute_ref_log_probs=true"]}


def run_dpo(bench: Bench, model_dir: Path, tag: str, overrides: list[str], rows: int) -> dict[str, Any]:
    run_dir, observe = bench.workdir / tag, bench.workdir / f"{tag}-observe"
    data = ROOT / "data" / "demo" / "prefs.jsonl"
    args = ["+pipeline=sft_dpo", "tracking=none", f"run_dir={run_dir}", "model=hf", f"model.name_or_path={model_dir}",
            *disable("sft_dpo", "sft", "eval", "kto"), "stages.dpo.policy=checkpoint",
            f"stages.dpo.data.sources=[{{path:'{data}',max_rows:{rows}}}]", "stages.dpo.data.eval_sources=[]",
            "stages.dpo.trainer.save_strategy=no", "stages.dpo.trainer.logging_steps=1",
            "stages.dpo.trainer.warmup_steps=0", *overrides]
    run(pipeline(*args), env=bench.env(observe=observe))
    (observation,) = stage_observations(observe, "dpo")
    return observation


def later_epoch_step(observation: dict[str, Any], key: str = "seconds") -> float:
    """Median time (`seconds`, or CPU time: `cpu_seconds`) of the optimizer steps after the first epoch."""
    later = [d[key] for d in step_durations(observation) if d["epoch"] > 1.0 + 1e-6]
    if not later:
        raise RuntimeError("no step after the first epoch; raise num_train_epochs")
    return median(later)


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("dpo_memory", __doc__.splitlines()[0], argv, repeats=2)
    size = QUICK if bench.quick else FULL
    model_dir = build_checkpoint(bench, size["model"])
    n_params = parameters(model_dir)
    epochs = ["stages.dpo.trainer.max_steps=-1", f"stages.dpo.trainer.num_train_epochs={size['epochs']}",
              f"stages.dpo.trainer.per_device_train_batch_size={size['batch']}"]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    floor: list[float] = []
    for i in range(bench.repeats):  # A B C D floor A B C D floor ...
        for j, (name, overrides) in enumerate(VARIANTS.items()):
            with progress(f"repeat {i + 1}/{bench.repeats}: {name}"):
                o = run_dpo(bench, model_dir, f"v{j}-{i}", [*epochs, *overrides], size["rows"])
            results[name].append({"train_mb": o["maxrss_mb_train_end"], "exit_mb": o["maxrss_mb_exit"],
                                  "step_s": later_epoch_step(o), "step_cpu_s": later_epoch_step(o, "cpu_seconds")})
        floor.append(run(python("-c", IMPORTS), env=bench.env()).maxrss_mb)
    floor_mb = median(floor)

    def series(name: str, key: str) -> list[float]:
        return [r[key] for r in results[name]]

    rows = [{"variant": name, "peak_rss_mb": median(series(name, "train_mb")),
             "above_import_floor_mb": median(series(name, "train_mb")) - floor_mb,
             "peak_rss_incl_save_mb": median(series(name, "exit_mb")), "step_s_epoch2+": median(series(name, "step_s")),
             "step_cpu_s_epoch2+": median(series(name, "step_cpu_s"))}
            for name in VARIANTS]
    rows.append({"variant": "import floor (python + torch + TRL)", "peak_rss_mb": floor_mb,
                 "above_import_floor_mb": 0.0, "peak_rss_incl_save_mb": None, "step_s_epoch2+": None,
                 "step_cpu_s_epoch2+": None})
    memory_ratio = ratio(series(LORA, "train_mb"), series(FULL_LIVE, "train_mb"))
    above_floor = (median(series(LORA, "train_mb")) - floor_mb) / (median(series(FULL_LIVE, "train_mb")) - floor_mb)
    step_ratio = ratio(series(FULL_PRECOMPUTED, "step_s"), series(FULL_LIVE, "step_s"))
    lora_step_ratio = ratio(series(LORA_PRECOMPUTED, "step_s"), series(LORA, "step_s"))
    rows.append({"variant": "LoRA / full live (memory); full precomputed / live (step)", "peak_rss_mb": memory_ratio,
                 "above_import_floor_mb": above_floor, "peak_rss_incl_save_mb": None, "step_s_epoch2+": step_ratio,
                 "step_cpu_s_epoch2+": ratio(series(FULL_PRECOMPUTED, "step_cpu_s"), series(FULL_LIVE, "step_cpu_s"))})
    rows.append({"variant": "LoRA precomputed / LoRA live (step)", "peak_rss_mb": None, "above_import_floor_mb": None,
                 "peak_rss_incl_save_mb": None, "step_s_epoch2+": lora_step_ratio,
                 "step_cpu_s_epoch2+": ratio(series(LORA_PRECOMPUTED, "step_cpu_s"), series(LORA, "step_cpu_s"))})
    print(f"\nmodel: {n_params / 1e6:.1f}M parameters, {size['model'] or 'conf/model/tiny.yaml'}; "
          f"{size['rows']} pairs, batch {size['batch']}, {size['epochs']} epochs")
    bench.finish(rows, [headline("DPO peak RSS, LoRA / full + separate reference", memory_ratio, "<=", 0.6),
                        headline("DPO step time epoch 2+, precomputed / live reference (full)", step_ratio, "<=", 0.7),
                        headline("DPO step time epoch 2+, precomputed / live reference (LoRA)", lora_step_ratio,
                                 "<=", 0.7)],
                 results=results, import_floor_mb=floor, model_parameters=n_params,
                 memory_ratio_above_floor=above_floor, size=size)


if __name__ == "__main__":
    main()

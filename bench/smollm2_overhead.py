"""SmolLM2 LoRA SFT and DPO through posttrain vs the same work as plain TRL scripts, side by side.

    python -m bench.smollm2_overhead [--quick] [--repeats 2] [--sft-steps 20] [--dpo-steps 10]

Both start from one converted SmolLM2-135M-Instruct dir (the GGUF conversion is set-up, untimed:
the pipeline gets it as `model=hf model.name_or_path=<dir>`), train the same LoRA SFT then DPO
(settings of conf/pipeline/smollm2_cpu.yaml, the same steps and max_length), evaluate 32 eval rows
and save adapter + merged model. The baseline is bench/plain_trl_smollm2.py, one process per
script. Variants alternate (A B A B ...). Reported: wall-time ratio (median of back-to-back
pairs), per-step ratio (median optimizer-step time of each stage, from bench/observer), and peak
RSS (the largest process of each variant). Target for each: posttrain / plain <= 1.02.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from bench.common import (
    Bench, Run, headline, median, parse, pipeline, progress, python, read_observations, read_summary, run,
    step_durations,
)

STAGES = ("sft", "dpo")
MAX_LENGTH = 72  # what `max_length: auto` resolves to on data/chat_tasks with SmolLM2's tokenizer (the plan prints it)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--dpo-steps", type=int, default=10)


def settings(args: argparse.Namespace, quick: bool) -> dict[str, list[str]]:
    steps = {"sft": 3 if quick else args.sft_steps, "dpo": 2 if quick else args.dpo_steps}
    return {s: [f"max_steps={n}", f"max_length={MAX_LENGTH}", "logging_steps=5", "save_steps=1000"]
            for s, n in steps.items()}


def observed(observe: Path, key: str) -> dict[str, Any]:
    """Median step seconds and peak RSS of the process that trained `key` (its stage name or argv[1])."""
    for o in read_observations(observe):
        if key in (o.get("stage"), (o.get("argv") or [None, None])[1]):
            steps = [d["seconds"] for d in step_durations(o)][1:]  # the first step warms up
            return {"step_s": median(steps) if steps else None, "loop_s": o["train_end_s"] - o["train_begin_s"],
                    "maxrss_mb": o.get("maxrss_mb_exit")}
    raise RuntimeError(f"no observation of {key} in {observe}")


def run_pipeline(bench: Bench, base: Path, target: Path, sets: dict[str, list[str]]) -> tuple[Run, dict]:
    run_dir, observe = target / "run", target / "observe"
    overrides = ["+pipeline=smollm2_cpu", "model=hf", f"model.name_or_path={base}", "tracking=none",
                 f"run_dir={run_dir}", "stages.eval.enabled=false"]
    overrides += [f"stages.{stage}.trainer.{kv}" for stage, kvs in sets.items() for kv in kvs]
    result = run(pipeline(*overrides), env=bench.env(observe=observe))
    bad = {n: s["status"] for n, s in read_summary(run_dir).items() if s["status"] not in ("completed", "given")}
    if bad:
        raise RuntimeError(f"pipeline stages did not complete: {bad}")
    return result, {s: observed(observe, s) for s in STAGES}


def run_plain(bench: Bench, base: Path, target: Path, sets: dict[str, list[str]]) -> tuple[Run, dict]:
    observe, upstream, runs = target / "observe", base, []
    for stage in STAGES:
        extra = [a for kv in sets[stage] for a in ("--set", kv)]
        runs.append(run(python("-m", "bench.plain_trl_smollm2", stage, str(upstream), str(target / stage), *extra),
                        env=bench.env(observe=observe)))
        upstream = target / stage
    total = Run(runs[-1].argv, 0, sum(r.wall_s for r in runs), max(r.maxrss_mb for r in runs), "",
                sum(r.cpu_s for r in runs))
    return total, {s: observed(observe, s) for s in STAGES}


def main(argv: list[str] | None = None) -> None:
    bench, args = parse("smollm2_overhead", __doc__.splitlines()[0], argv, repeats=2, add_arguments=add_arguments)
    sets = settings(args, bench.quick)
    base = bench.workdir / "base"
    with progress("convert the GGUF file once (set-up, untimed)"):
        run(python("-m", "bench.plain_trl_smollm2", "convert", str(base)), env=bench.env())
    variants = {"posttrain": run_pipeline, "plain": run_plain}
    walls: dict[str, list[float]] = {n: [] for n in variants}
    rss: dict[str, list[float]] = {n: [] for n in variants}
    steps: dict[str, dict[str, list[float]]] = {n: {s: [] for s in STAGES} for n in variants}
    for i in range(bench.repeats):
        for name, fn in variants.items():
            target = bench.workdir / f"{name}-{i}"
            with progress(f"repeat {i + 1}/{bench.repeats}: {name}"):
                result, info = fn(bench, base, target, sets)
            walls[name].append(result.wall_s)
            rss[name].append(result.maxrss_mb)
            for stage in STAGES:
                steps[name][stage].append(info[stage]["step_s"])
            shutil.rmtree(target, ignore_errors=True)
    pairs = [p / q for p, q in zip(walls["posttrain"], walls["plain"])]
    step_ratio = {s: median(steps["posttrain"][s]) / median(steps["plain"][s]) for s in STAGES}
    rows = [{"measure": "wall time, s (median)", "posttrain": median(walls["posttrain"]),
             "plain": median(walls["plain"]), "ratio": median(pairs)}]
    rows += [{"measure": f"{s} step, s (median)", "posttrain": median(steps["posttrain"][s]),
              "plain": median(steps["plain"][s]), "ratio": step_ratio[s]} for s in STAGES]
    rows.append({"measure": "peak RSS, MB (largest process)", "posttrain": median(rss["posttrain"]),
                 "plain": median(rss["plain"]), "ratio": median(rss["posttrain"]) / median(rss["plain"])})
    wall = headline("wall time posttrain / plain, median of back-to-back pairs", median(pairs), "<=", 1.02)
    bench.finish(rows, [wall,
                        *[headline(f"{s} step time posttrain / plain", step_ratio[s], "<=", 1.02) for s in STAGES],
                        headline("peak RSS posttrain / plain", rows[-1]["ratio"], "<=", 1.02)],
                 walls=walls, pair_ratios=pairs, step_seconds=steps, maxrss_mb=rss, settings=sets,
                 baseline="bench/plain_trl_smollm2.py: sft, dpo as 2 processes")


if __name__ == "__main__":
    main()

"""A DPO sweep that shares its SFT: `-m ... stages.dpo.trainer.beta=a,b,c` against the same three
pipelines run separately (each in a fresh store, so each trains its own SFT), side by side.

    python -m bench.sweep [--quick] [--repeats 3]

Both start from the same model (built once by the checkpoint stage, given as `model=hf`), train
SFT then DPO with the demo's settings (`--quick`: a few steps, two variants) and no eval stage,
without tracking. Every repeat uses fresh stores: the sweep trains SFT once and DPO per variant,
the separate pipelines train SFT and DPO each. The target is the ideal of sharing the SFT,
(SFT + n*DPO) / (n*(SFT + DPO)) for n variants, with 5% slack, where SFT and DPO are the stages'
wall seconds measured in the separate pipelines; the wall and CPU ratios (sweep / separate, the
median of per-repeat pairs that ran back to back) are compared to it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench.common import (
    Bench, build_checkpoint, disable, headline, median, parse, pipeline, progress, read_summary, run,
)

BETAS = ("0.05", "0.1", "0.2")
QUICK = {"sft": ["max_steps=6", "logging_steps=3"], "dpo": ["max_steps=4", "logging_steps=2"]}
SLACK = 1.05


def base(bench: Bench, model_dir: Path) -> list[str]:
    out = ["+pipeline=sft_dpo", "tracking=none", "model=hf", f"model.name_or_path={model_dir}",
           *disable("sft_dpo", "eval")]
    if bench.quick:
        out += [f"stages.{stage}.trainer.{kv}" for stage, kvs in QUICK.items() for kv in kvs]
        out += [f"stages.{stage}.data.sources.0.max_rows=64" for stage in QUICK]
    return out


def run_sweep(bench: Bench, target: Path, args: list[str], betas: tuple[str, ...]) -> tuple[Any, list[dict]]:
    result = run(pipeline("-m", *args, f"stages.dpo.trainer.beta={','.join(betas)}", f"hydra.sweep.dir={target}",
                          f"store_dir={target}-store"), env=bench.env())
    return result, [read_summary(target / str(i)) for i in range(len(betas))]


def run_separately(bench: Bench, target: Path, args: list[str], betas: tuple[str, ...]) -> tuple[Any, list[dict]]:
    results, summaries = [], []
    for beta in betas:  # each its own run_dir and store (bench.common.pipeline): nothing is shared
        run_dir = target / f"beta-{beta}"
        results.append(run(pipeline(*args, f"stages.dpo.trainer.beta={beta}", f"run_dir={run_dir}"), env=bench.env()))
        summaries.append(read_summary(run_dir))
    total = results[0]
    total.wall_s, total.cpu_s = sum(r.wall_s for r in results), sum(r.cpu_s for r in results)
    return total, summaries


def problems(name: str, summaries: list[dict]) -> list[str]:
    """What the sweep must show: SFT trained by one variant only, a DPO model per variant."""
    out = []
    trained = [s["sft"]["status"] for s in summaries]
    expect = ["completed"] + (["cached"] * (len(summaries) - 1) if name == "sweep" else ["completed"] * (len(summaries) - 1))
    if trained != expect:
        out.append(f"{name}: sft statuses {trained}, expected {expect}")
    if len({s["dpo"]["output_dir"] for s in summaries}) != len(summaries):
        out.append(f"{name}: the DPO variants do not have a model each")
    if any(s["dpo"]["status"] != "completed" for s in summaries):
        out.append(f"{name}: a DPO variant did not complete")
    return out


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("sweep", __doc__.splitlines()[0], argv, repeats=3)
    betas = BETAS[:2] if bench.quick else BETAS
    with progress("the starting model (checkpoint stage)"):
        model_dir = build_checkpoint(bench, {})
    args = base(bench, model_dir)
    variants = {"sweep": run_sweep, "separate": run_separately}
    walls: dict[str, list[float]] = {n: [] for n in variants}
    cpus: dict[str, list[float]] = {n: [] for n in variants}
    stage_s: dict[str, list[float]] = {"sft": [], "dpo": []}
    found: list[str] = []
    for i in range(bench.repeats):  # A B A B ...
        for name, fn in variants.items():
            target = bench.workdir / f"{name}-{i}"
            with progress(f"repeat {i + 1}/{bench.repeats}: {name} ({len(betas)} DPO variants)"):
                result, summaries = fn(bench, target, args, betas)
            walls[name].append(result.wall_s)
            cpus[name].append(result.cpu_s)
            found += problems(name, summaries)
            if name == "separate":
                for stage in stage_s:
                    stage_s[stage] += [float(s[stage]["wall_seconds"]) for s in summaries]
            shutil.rmtree(target, ignore_errors=True)
            shutil.rmtree(f"{target}-store", ignore_errors=True)
    n, sft, dpo = len(betas), median(stage_s["sft"]), median(stage_s["dpo"])
    target = (sft + n * dpo) / (n * (sft + dpo)) * SLACK
    wall = median([a / b for a, b in zip(walls["sweep"], walls["separate"])])
    cpu = median([a / b for a, b in zip(cpus["sweep"], cpus["separate"])])
    rows = [{"variant": f"-m sweep, {n} DPO variants (SFT once)", "median_s": median(walls["sweep"]),
             "median_cpu_s": median(cpus["sweep"]), "runs_s": [round(w, 1) for w in walls["sweep"]]},
            {"variant": f"{n} separate pipelines (SFT each)", "median_s": median(walls["separate"]),
             "median_cpu_s": median(cpus["separate"]), "runs_s": [round(w, 1) for w in walls["separate"]]},
            {"variant": "sft stage / dpo stage (separate runs)", "median_s": sft, "median_cpu_s": None,
             "runs_s": f"dpo {dpo:.1f} s"},
            {"variant": "checks (SFT trained once per sweep, a DPO model per variant)", "median_s": None,
             "median_cpu_s": None, "runs_s": "passed" if not found else "; ".join(found)}]
    bench.finish(rows, [headline("wall ratio, sweep / separate", wall, "<=", round(target, 3)),
                        headline("CPU ratio, sweep / separate", cpu, "<=", round(target, 3))],
                 walls=walls, cpu_seconds=cpus, stage_seconds=stage_s, variants=n, target=target,
                 ideal=target / SLACK, problems=found)


if __name__ == "__main__":
    main()

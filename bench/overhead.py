"""Orchestration overhead: `python -m workflows.run +pipeline=sft_dpo` vs. the same work as plain
TRL scripts chained by hand (bench/plain_trl_sft_dpo.py, one process per script), back to back.

    python -m bench.overhead [--quick] [--repeats 3]

Both build the tiny model, run SFT then DPO with the same data, settings and steps (the demo's
own: conf/stage/{sft,dpo}.yaml), evaluate on the eval split and save. The pipeline runs without
tracking (tracking=none) and without its eval stage, in a fresh run_dir every repeat; what it
adds is composition, validation of every data row, fingerprints, manifests and process
start-up around each stage. Target: wall-time ratio <= 1.03.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.common import (
    Bench, Run, disable, headline, median, parse, pipeline, progress, python, ratio, read_summary, run,
)

QUICK_STEPS = {"sft": 4, "dpo": 2}


def steps(bench: Bench) -> dict[str, list[str]]:
    """Trainer settings both variants get (key=value); the full run keeps the demo's own steps."""
    if bench.quick:
        return {stage: [f"max_steps={n}", "logging_steps=2"] for stage, n in QUICK_STEPS.items()}
    return {"sft": [], "dpo": []}


def run_pipeline(bench: Bench, run_dir: Path, settings: dict[str, list[str]]) -> tuple[Run, dict[str, Any]]:
    overrides = ["+pipeline=sft_dpo", "tracking=none", f"run_dir={run_dir}", *disable("sft_dpo", "eval")]
    overrides += [f"stages.{stage}.trainer.{kv}" for stage, kvs in settings.items() for kv in kvs]
    result = run(pipeline(*overrides), env=bench.env())
    summary = read_summary(run_dir)
    bad = {n: s["status"] for n, s in summary.items() if s["status"] != "completed"}
    if bad:
        raise RuntimeError(f"pipeline stages did not complete: {bad}")
    info = {"stage_seconds": sum(s["wall_seconds"] or 0 for s in summary.values()),
            "steps": {n: int(s["metrics"].get("global_step", 0)) for n, s in summary.items() if n != "checkpoint"}}
    return result, info


def run_plain(bench: Bench, out: Path, settings: dict[str, list[str]]) -> tuple[Run, dict[str, Any]]:
    """Three scripts, one after another, timed together (the scripts' own start-up included)."""
    script = ("-m", "bench.plain_trl_sft_dpo")
    commands = [python(*script, "build", str(out / "checkpoint"))]
    upstream = out / "checkpoint"
    for stage in ("sft", "dpo"):
        sets = [a for kv in settings[stage] for a in ("--set", kv)]
        commands.append(python(*script, stage, str(upstream), str(out / stage), *sets))
        upstream = out / stage
    runs = [run(c, env=bench.env()) for c in commands]
    total = Run(commands[-1], 0, sum(r.wall_s for r in runs), max(r.maxrss_mb for r in runs),
                "\n".join(r.output for r in runs), sum(r.cpu_s for r in runs))
    steps_done = {s: int(json.loads((out / s / "metrics.json").read_text())["global_step"]) for s in ("sft", "dpo")}
    return total, {"steps": steps_done}


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("overhead", __doc__.splitlines()[0], argv)
    settings = steps(bench)
    if not bench.quick:  # warm the page cache, the datasets cache and posttrain's hash caches, untimed
        with progress("warm-up (a few steps of each)"):
            warm = {stage: [f"max_steps={n}"] for stage, n in QUICK_STEPS.items()}
            run_pipeline(bench, bench.workdir / "warm-pipeline", warm)
            run_plain(bench, bench.workdir / "warm-plain", warm)
    walls: dict[str, list[float]] = {"pipeline": [], "plain": []}
    cpus: dict[str, list[float]] = {"pipeline": [], "plain": []}
    infos: dict[str, list[dict[str, Any]]] = {"pipeline": [], "plain": []}
    for i in range(bench.repeats):  # A B A B ...
        for name, fn in (("pipeline", run_pipeline), ("plain", run_plain)):
            target = bench.workdir / f"{name}-{i}"
            with progress(f"repeat {i + 1}/{bench.repeats}: {name}"):
                result, info = fn(bench, target, settings)
            walls[name].append(result.wall_s)
            cpus[name].append(result.cpu_s)
            infos[name].append(info)
            shutil.rmtree(target, ignore_errors=True)
    if infos["pipeline"][0]["steps"] != infos["plain"][0]["steps"]:
        raise RuntimeError(f"the two variants trained different steps: {infos}")
    orchestrator = [w - i["stage_seconds"] for w, i in zip(walls["pipeline"], infos["pipeline"])]
    value = ratio(walls["pipeline"], walls["plain"])
    pairs = [p / q for p, q in zip(walls["pipeline"], walls["plain"])]
    rows = [
        {"variant": "posttrain sft_dpo (tracking=none)", "median_s": median(walls["pipeline"]),
         "median_cpu_s": median(cpus["pipeline"]), "runs_s": [round(w, 1) for w in walls["pipeline"]],
         "steps": infos["pipeline"][0]["steps"]},
        {"variant": "plain TRL scripts, 3 processes", "median_s": median(walls["plain"]),
         "median_cpu_s": median(cpus["plain"]), "runs_s": [round(w, 1) for w in walls["plain"]],
         "steps": infos["plain"][0]["steps"]},
        {"variant": "ratio posttrain / plain", "median_s": value, "median_cpu_s": ratio(cpus["pipeline"], cpus["plain"]),
         "runs_s": [round(p, 3) for p in pairs], "steps": "-"},
        {"variant": "orchestrator outside stage processes", "median_s": median(orchestrator), "median_cpu_s": None,
         "runs_s": [round(o, 1) for o in orchestrator], "steps": "-"},
    ]
    bench.finish(rows, [headline("wall time posttrain / plain TRL", value, "<=", 1.03)],
                 walls=walls, cpu_seconds=cpus, pair_ratios=pairs, orchestrator_seconds=orchestrator,
                 settings=settings, baseline="bench/plain_trl_sft_dpo.py: build, sft, dpo as 3 processes")


if __name__ == "__main__":
    main()

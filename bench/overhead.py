"""Orchestration overhead: `python -m workflows.run +pipeline=sft_dpo` vs. the same work as plain
TRL scripts chained by hand (bench/plain_trl_sft_dpo.py, one process per script), back to back.

    python -m bench.overhead [--quick] [--repeats 5]

Both build the tiny model, run SFT then DPO with the same data, settings and steps (the demo's
own: conf/stage/{sft,dpo}.yaml), evaluate on the eval split and save. The pipeline runs without
tracking (tracking=none) and without its eval stage, in a fresh run_dir every repeat; what it
adds is composition, validation of every data row, fingerprints, manifests and process start-up
around each stage. Target: wall-time ratio <= 1.03.

Training loops on a shared machine vary by several percent from one run to the next, more than
the target allows, so the table also splits every process into its training loop (first to last
optimizer step, from bench/observer) and the rest (start-up, data, model loading, evaluation,
saving). The rest is where an orchestrator can cost anything; `non-loop overhead` is the extra
time the pipeline spends outside training loops, as a fraction of the plain scripts' total.

The headline ratio is the median over repeats of (pipeline / plain) for the two runs of one
repeat, which ran back to back, so a slow minute of the machine hits both; the ratio of the two
medians is printed beside it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.common import (
    Bench, Run, disable, headline, median, parse, pipeline, progress, python, ratio, read_observations, read_summary,
    run,
)

QUICK_STEPS = {"sft": 4, "dpo": 2}
STAGES = ("sft", "dpo")


def steps(bench: Bench) -> dict[str, list[str]]:
    """Trainer settings both variants get (key=value); the full run keeps the demo's own steps."""
    if bench.quick:
        return {stage: [f"max_steps={n}", "logging_steps=2"] for stage, n in QUICK_STEPS.items()}
    return {"sft": [], "dpo": []}


def loop_seconds(observe: Path, which: dict[str, str]) -> dict[str, float]:
    """Seconds of each stage's training loop (train begin to train end), from the observer files;
    `which` maps a stage name to how its process is recognised (`stage` field or argv[1])."""
    out = {}
    for o in read_observations(observe):
        for stage, key in which.items():
            if key in (o.get("stage"), (o.get("argv") or [None, None])[1]):
                out[stage] = o["train_end_s"] - o["train_begin_s"]
    return out


def run_pipeline(bench: Bench, target: Path, settings: dict[str, list[str]]) -> tuple[Run, dict[str, Any]]:
    run_dir, observe = target / "run", target / "observe"
    overrides = ["+pipeline=sft_dpo", "tracking=none", f"run_dir={run_dir}", *disable("sft_dpo", "eval")]
    overrides += [f"stages.{stage}.trainer.{kv}" for stage, kvs in settings.items() for kv in kvs]
    result = run(pipeline(*overrides), env=bench.env(observe=observe))
    summary = read_summary(run_dir)
    bad = {n: s["status"] for n, s in summary.items() if s["status"] != "completed"}
    if bad:
        raise RuntimeError(f"pipeline stages did not complete: {bad}")
    processes = {n: float(s["wall_seconds"] or 0) for n, s in summary.items()}
    processes["orchestrator"] = result.wall_s - sum(processes.values())
    info = {"processes": processes, "loops": loop_seconds(observe, {s: s for s in STAGES}),
            "steps": {n: int(s["metrics"].get("global_step", 0)) for n, s in summary.items() if n in STAGES}}
    return result, info


def run_plain(bench: Bench, target: Path, settings: dict[str, list[str]]) -> tuple[Run, dict[str, Any]]:
    """Three scripts, one after another, timed together (the scripts' own start-up included)."""
    observe = target / "observe"
    script = ("-m", "bench.plain_trl_sft_dpo")
    commands = {"checkpoint": python(*script, "build", str(target / "checkpoint"))}
    upstream = target / "checkpoint"
    for stage in STAGES:
        sets = [a for kv in settings[stage] for a in ("--set", kv)]
        commands[stage] = python(*script, stage, str(upstream), str(target / stage), *sets)
        upstream = target / stage
    runs = {name: run(c, env=bench.env(observe=observe)) for name, c in commands.items()}
    total = Run(commands["dpo"], 0, sum(r.wall_s for r in runs.values()), max(r.maxrss_mb for r in runs.values()),
                "", sum(r.cpu_s for r in runs.values()))
    info = {"processes": {name: r.wall_s for name, r in runs.items()}, "loops": loop_seconds(observe, {s: s for s in STAGES}),
            "steps": {s: int(json.loads((target / s / "metrics.json").read_text())["global_step"]) for s in STAGES}}
    info["processes"]["orchestrator"] = 0.0
    return total, info


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("overhead", __doc__.splitlines()[0], argv, repeats=5)
    settings = steps(bench)
    if not bench.quick:  # warm the page cache, the datasets cache and posttrain's hash caches, untimed
        with progress("warm-up (a few steps of each)"):
            warm = {stage: [f"max_steps={n}"] for stage, n in QUICK_STEPS.items()}
            run_pipeline(bench, bench.workdir / "warm-pipeline", warm)
            run_plain(bench, bench.workdir / "warm-plain", warm)
    variants = {"pipeline": run_pipeline, "plain": run_plain}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    infos: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(bench.repeats):  # A B A B ...
        for name, fn in variants.items():
            target = bench.workdir / f"{name}-{i}"
            with progress(f"repeat {i + 1}/{bench.repeats}: {name}"):
                result, info = fn(bench, target, settings)
            walls[name].append(result.wall_s)
            cpus[name].append(result.cpu_s)
            infos[name].append(info)
            shutil.rmtree(target, ignore_errors=True)
    if infos["pipeline"][0]["steps"] != infos["plain"][0]["steps"]:
        raise RuntimeError(f"the two variants trained different steps: {infos}")

    def phase(name: str, part: str) -> list[float]:
        """Per repeat: seconds of one process (`checkpoint`, `orchestrator`, `sft`, `dpo`), its training
        loop (`sft loop`), or the rest of it (`sft rest`)."""
        out = []
        for info in infos[name]:
            stage, _, kind = part.partition(" ")
            if kind == "loop":
                out.append(info["loops"][stage])
            elif kind == "rest":
                out.append(info["processes"][stage] - info["loops"][stage])
            else:
                out.append(info["processes"][stage])
        return out

    parts = ["orchestrator", "checkpoint", "sft rest", "sft loop", "dpo rest", "dpo loop"]
    labels = {"orchestrator": "orchestrator (outside stage processes)", "checkpoint": "checkpoint / build script",
              "sft rest": "sft: start-up, data, model, eval, save", "sft loop": "sft: training loop",
              "dpo rest": "dpo: start-up, data, model, eval, save", "dpo loop": "dpo: training loop"}
    rows = [{"part": labels[p], "posttrain_s": median(phase("pipeline", p)), "plain_s": median(phase("plain", p)),
             "difference_s": median([a - b for a, b in zip(phase("pipeline", p), phase("plain", p))])} for p in parts]
    rows.append({"part": "total wall time", "posttrain_s": median(walls["pipeline"]), "plain_s": median(walls["plain"]),
                 "difference_s": median([a - b for a, b in zip(walls["pipeline"], walls["plain"])])})
    pairs = [p / q for p, q in zip(walls["pipeline"], walls["plain"])]
    value = median(pairs)  # each pair ran back to back: drift of the machine cancels within a pair
    rest = [p for p in parts if "loop" not in p]
    extra = [sum(phase("pipeline", p)[i] - phase("plain", p)[i] for p in rest) / walls["plain"][i]
             for i in range(bench.repeats)]
    rows.append({"part": "ratio posttrain / plain: median of pairs (per pair)", "posttrain_s": value,
                 "plain_s": None, "difference_s": [round(p, 3) for p in pairs]})
    rows.append({"part": "ratio of the medians", "posttrain_s": ratio(walls["pipeline"], walls["plain"]),
                 "plain_s": None, "difference_s": None})
    rows.append({"part": "non-loop overhead / plain total (per repeat)", "posttrain_s": median(extra),
                 "plain_s": None, "difference_s": [round(e, 3) for e in extra]})
    print(f"\nsteps: {infos['pipeline'][0]['steps']} (both variants); CPU seconds median: "
          f"posttrain {median(cpus['pipeline']):.1f}, plain {median(cpus['plain']):.1f}")
    bench.finish(rows, [headline("wall time posttrain / plain TRL, median of back-to-back pairs", value, "<=",
                                 1.03),
                        headline("time outside training loops, posttrain - plain, / plain total", 1 + median(extra),
                                 "<=", 1.03)],
                 walls=walls, cpu_seconds=cpus, pair_ratios=pairs, non_loop_overhead=extra, repeats_detail=infos,
                 settings=settings, baseline="bench/plain_trl_sft_dpo.py: build, sft, dpo as 3 processes")


if __name__ == "__main__":
    main()

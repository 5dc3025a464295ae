"""Planning latency: `python -m workflows.run +pipeline=sft_dpo dry_run=true` vs. merely importing
the trainers it plans for, `python -c "from trl import SFTTrainer, DPOTrainer, KTOTrainer"`.

    python -m bench.planning [--quick] [--repeats 5]

The dry run composes the config, validates every stage and every data row (token lengths
included) and prints the plan. It is timed with posttrain's caches warm (the usual case: a
second plan of the same data) and cold (a fresh POSTTRAIN_CACHE_DIR every repeat). A run with
`python -X importtime` checks that planning imports none of torch, transformers, trl, deepspeed
or mlflow. Target: dry run / import <= 0.25.
"""

from __future__ import annotations

from bench.common import Run, headline, median, parse, pipeline, progress, python, ratio, run

HEAVY = ("torch", "transformers", "trl", "deepspeed", "mlflow", "datasets")
IMPORT_TRL = "from trl import SFTTrainer, DPOTrainer, KTOTrainer"


def heavy_imports(importtime_output: str) -> list[str]:
    """Top-level packages among HEAVY that `python -X importtime` saw imported."""
    seen = set()
    for line in importtime_output.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            top = module.split(".")[0]
            if top in HEAVY:
                seen.add(top)
    return sorted(seen)


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("planning", __doc__.splitlines()[0], argv, repeats=5)
    run_dir = bench.workdir / "run"
    dry = pipeline("+pipeline=sft_dpo", "dry_run=true", f"run_dir={run_dir}")
    warm_env = bench.env()
    with progress("warm-up (fills posttrain's caches and the page cache)"):
        run(dry, env=warm_env)
        if not bench.quick:
            run(python("-c", IMPORT_TRL), env=warm_env)
    names = ("dry_run (warm caches)", "dry_run (cold caches)", "import trl")
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for i in range(bench.repeats):  # A B C A B C ...
        with progress(f"repeat {i + 1}/{bench.repeats}"):
            runs["dry_run (warm caches)"].append(run(dry, env=warm_env))
            cold_env = bench.env(POSTTRAIN_CACHE_DIR=str(bench.workdir / f"cold-cache-{i}"))
            runs["dry_run (cold caches)"].append(run(dry, env=cold_env))
            runs["import trl"].append(run(python("-c", IMPORT_TRL), env=warm_env))
    times = {name: [r.wall_s for r in rs] for name, rs in runs.items()}
    cpus = {name: [r.cpu_s for r in rs] for name, rs in runs.items()}
    imported = heavy_imports(run(python("-X", "importtime", *dry[1:]), env=warm_env).output)
    rows = [{"variant": name, "median_s": median(times[name]), "ratio_to_import_trl": ratio(times[name], times["import trl"]),
             "median_cpu_s": median(cpus[name]), "cpu_ratio": ratio(cpus[name], cpus["import trl"]),
             "runs_s": [round(v, 2) for v in times[name]]} for name in names]
    rows.append({"variant": "heavy packages dry_run imports", "median_s": None, "ratio_to_import_trl": None,
                 "median_cpu_s": None, "cpu_ratio": None, "runs_s": ", ".join(imported) or "none"})
    warm = ratio(times["dry_run (warm caches)"], times["import trl"])
    cold = ratio(times["dry_run (cold caches)"], times["import trl"])
    bench.finish(rows, [headline("dry_run (warm caches) / import trl", warm, "<=", 0.25),
                        headline("dry_run (cold caches) / import trl", cold, "<=", 0.25)],
                 times=times, cpu_seconds=cpus, heavy_imports=imported, dry_run_command=" ".join(dry[1:]))


if __name__ == "__main__":
    main()

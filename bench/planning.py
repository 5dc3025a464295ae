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

from bench.common import headline, median, parse, pipeline, progress, python, ratio, run

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
        run(python("-c", IMPORT_TRL), env=warm_env)
    times: dict[str, list[float]] = {"dry_run (warm caches)": [], "dry_run (cold caches)": [], "import trl": []}
    for i in range(bench.repeats):  # A B C A B C ...
        with progress(f"repeat {i + 1}/{bench.repeats}"):
            times["dry_run (warm caches)"].append(run(dry, env=warm_env).wall_s)
            cold_env = bench.env(POSTTRAIN_CACHE_DIR=str(bench.workdir / f"cold-cache-{i}"))
            times["dry_run (cold caches)"].append(run(dry, env=cold_env).wall_s)
            times["import trl"].append(run(python("-c", IMPORT_TRL), env=warm_env).wall_s)
    imported = heavy_imports(run(python("-X", "importtime", *dry[1:]), env=warm_env).output)
    rows = [{"variant": name, "median_s": median(values), "runs_s": [round(v, 2) for v in values],
             "ratio_to_import_trl": ratio(values, times["import trl"])} for name, values in times.items()]
    rows.append({"variant": "heavy packages dry_run imports", "median_s": None,
                 "runs_s": ", ".join(imported) or "none", "ratio_to_import_trl": None})
    warm = ratio(times["dry_run (warm caches)"], times["import trl"])
    cold = ratio(times["dry_run (cold caches)"], times["import trl"])
    bench.finish(rows, [headline("dry_run (warm caches) / import trl", warm, "<=", 0.25),
                        headline("dry_run (cold caches) / import trl", cold, "<=", 0.25)],
                 times=times, heavy_imports=imported, dry_run_command=" ".join(dry[1:]))


if __name__ == "__main__":
    main()

"""Cached re-run: the same `python -m workflows.run +pipeline=sft_dpo` command again, once the
pipeline has finished. Every stage must be `cached`, and nothing may start or load a model.

    python -m bench.cached_rerun [--quick] [--repeats 5]

The pipeline is trained once (a few steps per stage: the re-run's cost does not depend on them),
then re-run several times, alternating tracking=none and tracking=mlflow (a SQLite store in the
scratch folder; cached stages are still logged). Each re-run is checked: summary.json says
`cached` for every stage, no file in any stage folder changed (stage.log is appended to by every
stage process the launcher starts, so an untouched log means none started), and a
`python -X importtime` re-run shows that neither torch nor transformers was imported, so no model
was loaded. Target: <= 3 s.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import headline, median, parse, pipeline, pipeline_stages, progress, read_summary, run
from bench.planning import heavy_imports

FEW_STEPS = [f"stages.{stage}.trainer.{kv}" for stage in ("sft", "dpo")
             for kv in ("max_steps=3", "save_steps=3", "logging_steps=1")]


def few_steps(quick: bool) -> list[str]:
    """A few steps per training stage; a few held-out rows for the eval stage where there is one
    (quick mode drops it: one process less in the test-suite)."""
    if "eval" not in pipeline_stages("sft_dpo"):
        return FEW_STEPS
    return FEW_STEPS + (["stages.eval.enabled=false"] if quick else ["stages.eval.eval.max_rows=16"])


def stage_files(run_dir: Path, stages: list[str]) -> dict[str, int]:
    """mtime (ns) of every file in the stage folders: a started stage changes at least stage.log."""
    return {str(p): p.stat().st_mtime_ns for s in stages for p in (run_dir / s).rglob("*") if p.is_file()}


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("cached_rerun", __doc__.splitlines()[0], argv, repeats=5)
    run_dir = bench.workdir / "run"
    tracking = {"tracking=none": ["tracking=none"],
                "tracking=mlflow": ["tracking=mlflow", f"tracking.uri=sqlite:///{bench.workdir / 'mlflow.db'}"]}
    base = ["+pipeline=sft_dpo", f"run_dir={run_dir}"]
    steps = few_steps(bench.quick)
    with progress("first run (trains every stage, a few steps each)"):
        first = run(pipeline(*base, *steps, *tracking["tracking=none"]), env=bench.env())
    stages = list(read_summary(run_dir))
    before = stage_files(run_dir, stages)
    times: dict[str, list[float]] = {name: [] for name in tracking}
    cpus: dict[str, list[float]] = {name: [] for name in tracking}
    problems: list[str] = []
    for i in range(bench.repeats):  # A B A B ...
        for name, overrides in tracking.items():
            with progress(f"repeat {i + 1}/{bench.repeats}: re-run, {name}"):
                result = run(pipeline(*base, *steps, *overrides), env=bench.env())
            times[name].append(result.wall_s)
            cpus[name].append(result.cpu_s)
            statuses = {n: s["status"] for n, s in read_summary(run_dir).items()}
            if set(statuses.values()) != {"cached"}:
                problems.append(f"{name} repeat {i + 1}: not all cached: {statuses}")
            changed = sorted(p for p, t in stage_files(run_dir, stages).items() if before.get(p) != t)
            if changed:
                problems.append(f"{name} repeat {i + 1}: stage files changed: {changed[:5]}")
    traced = run(pipeline(*base, *steps, *tracking["tracking=none"]), env=bench.env(PYTHONPROFILEIMPORTTIME="1"))
    imported = heavy_imports(traced.output)
    if {"torch", "transformers"} & set(imported):
        problems.append(f"the cached re-run imported {imported}")
    rows = [{"variant": f"cached re-run, {name}", "median_s": median(values), "median_cpu_s": median(cpus[name]),
             "runs_s": [round(v, 2) for v in values]} for name, values in times.items()]
    rows.append({"variant": "first run (trains: 3 steps per stage)", "median_s": first.wall_s,
                 "median_cpu_s": first.cpu_s, "runs_s": "-"})
    rows.append({"variant": "heavy packages the re-run imports (tracking=none)", "median_s": None,
                 "median_cpu_s": None, "runs_s": ", ".join(imported) or "none"})
    rows.append({"variant": "checks (all cached, no stage file touched, no model loaded)", "median_s": None,
                 "median_cpu_s": None, "runs_s": "passed" if not problems else "; ".join(problems)})
    bench.finish(rows, [headline("cached re-run, tracking=none", median(times["tracking=none"]), "<=", 3, " s"),
                        headline("cached re-run, tracking=mlflow", median(times["tracking=mlflow"]), "<=", 3, " s")],
                 times=times, cpu_seconds=cpus, stages=stages, heavy_imports=imported, problems=problems,
                 first_run_seconds=first.wall_s)
    if problems:
        raise SystemExit("cached re-run checks failed:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    main()

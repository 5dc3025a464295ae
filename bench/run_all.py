"""Run every benchmark, one after another, each in its own process: `python -m bench.run_all [--quick]`.

Each benchmark prints its table and writes bench/results/<name>.json; this prints a summary of
every target at the end and writes bench/results/run_all.json. `--quick` runs tiny sizes once,
to check that every benchmark still works (the test-suite does this); its numbers mean nothing.
For numbers worth reporting, run it on a quiet machine: `--wait-for-load 2` waits (up to
`--max-wait` seconds) before each benchmark until the 1-minute load average is below 2.
`--jobs 2` runs two benchmarks at a time, each one's output printed when it ends: only with
`--quick`, where the numbers are not read (side by side they would slow each other down).
Exit code 1 if a benchmark failed to run; unmet targets are reported, not failures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import MODEL_CACHE_ENV, RESULTS_DIR, ROOT, fmt, print_table

# (module, arguments with --quick). bench/data_validation.py (the data checks' benchmark) takes
# --rows and an --out file instead of the common --quick/--out folder.
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("planning", ["--quick"]),
    ("cached_rerun", ["--quick"]),
    ("overhead", ["--quick"]),
    ("packing", ["--quick"]),
    ("dpo_memory", ["--quick"]),
    ("deepspeed_step", ["--quick"]),
    ("sweep", ["--quick"]),
    ("data_validation", ["--rows", "2000"]),
    ("gpu_sft_mfu", ["--quick"]),
]


def arguments(name: str, quick_args: list[str], quick: bool, out: Path) -> list[str]:
    args = list(quick_args) if quick else []
    if name == "data_validation":
        return [*args, "--out", str(out / "data_validation.json")]
    return [*args, "--out", str(out)]


def wait_for_load(threshold: float, deadline: float) -> float:
    """Wait until the 1-minute load average is below `threshold` (or the deadline passes)."""
    while os.getloadavg()[0] >= threshold and time.time() < deadline:
        print(f"  load average {os.getloadavg()[0]:.2f} >= {threshold}: waiting", flush=True)
        time.sleep(30)
    return os.getloadavg()[0]


def summary_rows(name: str, path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    if data.get("skipped"):
        return [{"benchmark": name, "metric": data["skipped"], "value": None, "target": "-", "met": None}]
    headlines = data.get("headlines") or []
    if not headlines:
        return [{"benchmark": name, "metric": f"(no target: see {path.name})", "value": None, "target": "-",
                 "met": None}]
    return [{"benchmark": name, **h} for h in headlines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks every benchmark runs")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON results")
    parser.add_argument("--wait-for-load", type=float, default=None, metavar="LOAD",
                        help="before each benchmark, wait until the 1-minute load average is below LOAD")
    parser.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for the load in all")
    parser.add_argument("--jobs", type=int, default=1, help="benchmarks run at once (more than 1: --quick only)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.jobs > 1 and not args.quick):
        parser.error("--jobs above 1 needs --quick: benchmarks running side by side distort each other's timings")
    names = [n for n, _ in BENCHMARKS]
    chosen = args.only.split(",") if args.only else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)} (known: {', '.join(names)})")
    deadline = time.time() + args.max_wait
    models = tempfile.mkdtemp(prefix="posttrain-bench-models-")  # models built from config, shared by benchmarks
    env = {**os.environ, MODEL_CACHE_ENV: models,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    todo = [(name, quick_args) for name, quick_args in BENCHMARKS if name in chosen]
    printing = threading.Lock()

    def one(name: str, quick_args: list[str]) -> tuple[list[str], int, float, float]:
        load = wait_for_load(args.wait_for_load, deadline) if args.wait_for_load else os.getloadavg()[0]
        argv_ = [sys.executable, "-m", f"bench.{name}", *arguments(name, quick_args, args.quick, args.out)]
        header = f"\n=== {name}: {' '.join(argv_[1:])}  (load average {load:.2f})"
        if args.jobs == 1:
            print(header, flush=True)
        start = time.perf_counter()
        proc = subprocess.run(argv_, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE if args.jobs > 1 else None,
                              stderr=subprocess.STDOUT if args.jobs > 1 else None)
        seconds = time.perf_counter() - start
        if args.jobs > 1:  # run beside others: its output, whole, when it ends
            with printing:
                print(f"{header}\n{proc.stdout}", flush=True)
        return argv_, proc.returncode, seconds, load

    with ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip([n for n, _ in todo], pool.map(lambda item: one(*item), todo)))

    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    failed = []
    for name, _ in todo:  # reported in the listed order, whatever order they ended in
        argv_, code, seconds, load = done[name]
        runs.append({"benchmark": name, "command": " ".join(argv_[1:]), "exit_code": code, "seconds": seconds,
                     "load_average_before": load})
        result = args.out / f"{name}.json"
        if code != 0 or not result.is_file():
            failed.append(name)
            rows.append({"benchmark": name, "metric": f"FAILED (exit code {code})", "value": None, "target": "-",
                         "met": None})
            continue
        rows.extend(summary_rows(name, result))
    shutil.rmtree(models, ignore_errors=True)
    print_table("summary" + (" (quick: the numbers mean nothing)" if args.quick else ""), rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run_all.json").write_text(json.dumps({"quick": args.quick, "runs": runs, "summary": rows},
                                                      indent=2, default=str) + "\n")
    for run in runs:
        print(f"  {run['benchmark']}: {fmt(run['seconds'])} s, exit code {run['exit_code']}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

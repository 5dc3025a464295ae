"""What every benchmark shares: run a command and time it, side by side, medians, peak memory,
the trainer observer, a table on the console and JSON in bench/results/<name>.json.

Machines are noisy: a benchmark runs its variants interleaved (A B A B ...), reports medians of
the repeats and ratios of those medians, never one absolute time on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
OBSERVER_DIR = ROOT / "bench" / "observer"  # holds a sitecustomize.py: see bench/observer/sitecustomize.py
OBSERVE_ENV = "POSTTRAIN_BENCH_OBSERVE"  # where observed processes write <pid>.json


class BenchError(RuntimeError):
    """A benchmarked command failed; the message holds the command and the end of its output."""


@dataclass
class Run:
    """One finished command: its wall time and the peak resident memory of its process tree."""

    argv: list[str]
    returncode: int
    wall_s: float
    maxrss_mb: float  # largest RSS of the process or of any descendant it waited for (wait4)
    output: str = field(repr=False)
    cpu_s: float = 0.0  # user + system CPU seconds of the process and its waited-for descendants

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def base_env(extra: dict[str, str] | None = None, observe: Path | None = None) -> dict[str, str]:
    """The environment of benchmarked commands: offline hub, this checkout importable.

    `observe`: a folder where every process that trains writes its step times and peak memory
    (bench/observer/sitecustomize.py, put first on PYTHONPATH).
    """
    env = dict(os.environ)
    paths = [str(ROOT), env.get("PYTHONPATH", "")]
    if observe is not None:
        paths.insert(0, str(OBSERVER_DIR))
        env[OBSERVE_ENV] = str(observe)
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    # One torch thread per process unless the caller says otherwise: on a shared machine OpenMP's
    # barrier spin makes a 2-thread step 5-10x slower whenever another process takes a core, which
    # swamps any comparison. Every variant runs under the same setting (recorded in the JSON).
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float | None = None,
        check: bool = True) -> Run:
    """Run argv to the end; wall time from start to exit, peak RSS from the kernel (wait4).

    Raises:
        BenchError: when `check` and the command exits non-zero (or runs past `timeout`).
    """
    with tempfile.TemporaryFile("w+", errors="replace") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env or base_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timer = None
        if timeout:
            timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        result = Run(list(argv), proc.returncode, wall, usage.ru_maxrss / 1024, out.read(),
                     usage.ru_utime + usage.ru_stime)
    if check and result.returncode != 0:
        raise BenchError(f"exit code {result.returncode}: {' '.join(argv)}\n{result.tail()}")
    return result


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def pipeline(*overrides: str) -> list[str]:
    """`python -m workflows.run <overrides>`, as a user runs it. A `run_dir=X` without `store_dir`
    gets a stage store of its own, `X.store`: a benchmark that times training in a fresh run_dir
    trains, where a shared store would hand it what an earlier repeat trained."""
    run_dirs = [o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")]
    if run_dirs and not any(o.startswith("store_dir=") for o in overrides):
        overrides = (*overrides, f"store_dir={run_dirs[-1]}.store")
    return python("-m", "workflows.run", *overrides)


def pipeline_stages(pipeline_name: str) -> set[str]:
    """The stages a pipeline defines (to switch off the ones a benchmark does not time)."""
    from workflows.config import compose

    return set(compose([f"+pipeline={pipeline_name}"]).stages)


def disable(pipeline_name: str, *stage_names: str) -> list[str]:
    """Overrides that drop these stages from the pipeline, where it defines them."""
    defined = pipeline_stages(pipeline_name)
    return [f"stages.{s}.enabled=false" for s in stage_names if s in defined]


def read_summary(run_dir: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((run_dir / "summary.json").read_text())
    return {s["name"]: s for s in data["stages"]}


def interleave(variants: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, list[Any]]:
    """Run the variants in turn, A B A B ..., so slow drifts of the machine hit all of them alike."""
    results: dict[str, list[Any]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, fn in variants.items():
            results[name].append(fn(i))
    return results


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """Ratio of the medians of two interleaved series."""
    return median(numerator) / median(denominator)


def headline(metric: str, value: float | None, op: str, target: float, unit: str = "") -> dict[str, Any]:
    """One measured number against the issue's target; `op` is '<=' or '>='."""
    met = None if value is None else (value <= target if op == "<=" else value >= target)
    return {"metric": metric, "value": value, "target": f"{op} {target:g}{unit}", "met": met}


def read_observations(folder: Path) -> list[dict[str, Any]]:
    """What observed processes wrote (bench/observer/sitecustomize.py), one dict per process."""
    out = []
    for path in sorted(folder.glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            out.append(json.loads(path.read_text()))
    return out


def step_durations(observation: dict[str, Any]) -> list[dict[str, float]]:
    """[{step, epoch, seconds, cpu_seconds}] of every optimizer step, from consecutive step ends
    (cpu_seconds: CPU time of the process, all its threads, over the step)."""
    previous, previous_cpu = observation.get("train_begin_s", 0.0), observation.get("train_begin_cpu_s", 0.0)
    out = []
    for step in observation.get("steps", []):
        out.append({"step": step["step"], "epoch": step["epoch"], "seconds": step["t"] - previous,
                    "cpu_seconds": step.get("cpu", 0.0) - previous_cpu})
        previous, previous_cpu = step["t"], step.get("cpu", 0.0)
    return out


def stage_observations(folder: Path, stage: str) -> list[dict[str, Any]]:
    """The observed trainer processes of one stage (every rank), rank order."""
    found = [o for o in read_observations(folder) if o.get("stage") == stage and o.get("steps")]
    return sorted(found, key=lambda o: o.get("rank", 0))


MODEL_CACHE_ENV = "POSTTRAIN_BENCH_MODELS"  # set by run_all: benchmarks share models built from the same config


def build_checkpoint(bench: Bench, config: dict[str, Any], seed: int = 42) -> Path:
    """A model built from config by the pipeline's own checkpoint stage (stages/checkpoint.py), so
    benchmarks of one stage start from the same kind of model a pipeline would. Returns its dir."""
    import hashlib

    from workflows.config import compose

    model = dict(compose(["+pipeline=sft_dpo"]).model)  # conf/model/tiny.yaml, resolved
    model["config"] = {**model["config"], **config}
    shared = os.environ.get(MODEL_CACHE_ENV)
    key = hashlib.sha256(json.dumps([model, seed], sort_keys=True).encode()).hexdigest()[:16]
    stage_dir = Path(shared) / key if shared else bench.workdir / "checkpoint"
    model_dir = stage_dir / "model"
    stage_dir.mkdir(parents=True, exist_ok=True)
    with open(stage_dir.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # `run_all --jobs 2`: another benchmark may be building it now
        if not (stage_dir / "manifest.json").is_file():
            _build(stage_dir, model_dir, model, seed)
    return model_dir


def _build(stage_dir: Path, model_dir: Path, model: dict[str, Any], seed: int) -> None:
    from posttrain.spec import StageSpec

    # default resources and tracking: one python process, tracking none
    spec = StageSpec(name="checkpoint", type="checkpoint", stage_dir=str(stage_dir), model_dir=str(model_dir),
                     seed=seed, model=model)
    spec.dump(stage_dir / "stage.yaml")
    with progress("build the model from config"):
        run(python("-m", "stages.checkpoint", str(stage_dir / "stage.yaml")))


def parameters(model_dir: Path) -> int:
    """Parameter count the checkpoint stage recorded in its manifest."""
    manifest = json.loads((model_dir.parent / "manifest.json").read_text())
    return int(manifest["metrics"]["parameters"])


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """A plain-text table: one column per key of the first row."""
    print(f"\n{title}")
    if not rows:
        print("  (no rows)")
        return
    headers = list(rows[0])
    cells = [[fmt(r.get(h)) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  " + "  ".join("-" * w for w in widths))
    for c in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(c, widths)))


def environment() -> dict[str, Any]:
    """Where the numbers were taken: machine, load, package versions (without importing them)."""
    versions = {}
    for package in ("torch", "transformers", "trl", "peft", "deepspeed", "datasets", "hydra-core"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"machine": platform.machine(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "load_average": list(os.getloadavg()), "packages": versions,
            "omp_num_threads": base_env()["OMP_NUM_THREADS"]}


@dataclass
class Bench:
    """One benchmark's invocation: its options, a scratch folder, and how it reports."""

    name: str
    quick: bool
    repeats: int
    out: Path
    keep: bool
    command: str
    started: dict[str, Any] = field(default_factory=environment)
    workdir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"posttrain-bench-{self.name}-"))

    def env(self, observe: Path | None = None, **extra: str) -> dict[str, str]:
        """base_env with a cache of this benchmark's own, so runs never read the user's caches."""
        return base_env({"POSTTRAIN_CACHE_DIR": str(self.workdir / "cache"), **extra}, observe)

    def finish(self, rows: list[dict[str, Any]], headlines: list[dict[str, Any]], **extra: Any) -> Path:
        """Print the table and the targets, write bench/results/<name>.json, clean up."""
        print_table(f"{self.name}{' (quick: sizes too small for the numbers to mean anything)' * self.quick}", rows)
        if headlines:
            print_table("targets", [{"metric": h["metric"], "value": h["value"], "target": h["target"],
                                     "met": h["met"]} for h in headlines])
        payload = {"name": self.name, "command": self.command, "quick": self.quick, "repeats": self.repeats,
                   "environment": {**self.started, "load_average_end": list(os.getloadavg())},
                   "rows": rows, "headlines": headlines, **extra}
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"{self.name}.json"
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"\nwrote {path}")
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return path


def parse(name: str, description: str, argv: list[str] | None = None, repeats: int = 3,
          add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[Bench, argparse.Namespace]:
    """The options every benchmark takes: --quick, --repeats, --out, --keep."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the benchmark runs")
    parser.add_argument("--repeats", type=int, default=None, help=f"repeats of each variant (default {repeats}, "
                        "1 with --quick)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for <name>.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (run dirs, logs)")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"python -m bench.{name}" + (f" {argv_text}" if argv_text else "")
    bench = Bench(name, args.quick, args.repeats or (1 if args.quick else repeats), args.out, args.keep, command)
    print(f"{command}  (scratch: {bench.workdir}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)",
          flush=True)
    return bench, args


@contextlib.contextmanager
def progress(label: str) -> Iterator[None]:
    """`label ... 12.3 s` on the console around a step."""
    print(f"  {label} ...", end="", flush=True)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        print(" failed", flush=True)
        raise
    print(f" {time.perf_counter() - start:.1f} s", flush=True)

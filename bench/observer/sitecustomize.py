"""Benchmark observer: step times and peak memory of every process that trains, from the outside.

Python imports `sitecustomize` at start-up from the first folder on sys.path that has one; the
benchmarks put this folder first on PYTHONPATH of the commands they time (bench/common.py
`base_env(observe=...)`). It does nothing unless POSTTRAIN_BENCH_OBSERVE names a folder. Then,
when (and only if) a process imports transformers' trainer callbacks, the Trainer's callback
handler is wrapped to note the time of every optimizer step's end and every logged dict, and the
process writes <folder>/<pid>.json when training ends and again at exit:
  {stage, rank, argv, start_s, train_begin_s, train_begin_cpu_s, steps: [{step, epoch, t, cpu}], logs: [...],
   train_end_s, exit_s, maxrss_mb_train_end, maxrss_mb_exit}
(t: perf_counter, cpu: process_time of all the process's threads). The wrapping adds two clock
reads per step; the stage code is not touched. Every stage process (`-m stages.<type>`), whether it
trains or not, also leaves <folder>/<pid>.start at start-up: `<type> <stage.yaml>`, so a test can
count the stage processes a command started.
"""

from __future__ import annotations

import os

_FOLDER = os.environ.get("POSTTRAIN_BENCH_OBSERVE")

if _FOLDER:
    import atexit
    import importlib.abc
    import json
    import resource
    import sys
    import time

    _TARGET = "transformers.trainer_callback"
    _argv = list(getattr(sys, "orig_argv", []))  # python [opts] -m stages.<type> <stage.yaml>
    _module = _argv[_argv.index("-m") + 1] if "-m" in _argv[:-1] else ""
    if _module.startswith("stages."):
        os.makedirs(_FOLDER, exist_ok=True)
        with open(os.path.join(_FOLDER, f"{os.getpid()}.start"), "w") as _started:
            _started.write(" ".join([_module.removeprefix("stages."), *_argv[_argv.index("-m") + 2:]]))
    _record: dict = {"steps": [], "logs": [], "start_s": time.perf_counter()}  # ~ interpreter start

    def _maxrss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    def _stage_name(stage_yaml: str) -> str | None:
        """The stage's name: stage.yaml's `name:` line (its folder is a store entry, named by fingerprint)."""
        try:
            with open(stage_yaml) as f:
                return next((line.split(":", 1)[1].strip() for line in f if line.startswith("name:")), None)
        except OSError:
            return None

    def _write() -> None:
        if "train_begin_s" not in _record:
            return  # this process never trained: nothing to say
        stage_yaml = next((a for a in sys.argv if a.endswith("stage.yaml")), "")
        _record.update(pid=os.getpid(), argv=list(sys.argv), rank=int(os.environ.get("RANK", "0")),
                       world_size=int(os.environ.get("WORLD_SIZE", "1")),
                       stage=_stage_name(stage_yaml),
                       maxrss_mb_exit=_maxrss_mb(), exit_s=time.perf_counter())
        os.makedirs(_FOLDER, exist_ok=True)
        path = os.path.join(_FOLDER, f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(_record, f, default=str)
        os.replace(path + ".tmp", path)

    def _patch(module) -> None:
        handler = module.CallbackHandler
        on_train_begin, on_step_end, on_log, on_train_end = (
            handler.on_train_begin, handler.on_step_end, handler.on_log, handler.on_train_end)

        def train_begin(self, args, state, control):
            _record["train_begin_s"], _record["train_begin_cpu_s"] = time.perf_counter(), time.process_time()
            return on_train_begin(self, args, state, control)

        def step_end(self, args, state, control):
            _record["steps"].append({"step": state.global_step, "epoch": state.epoch, "t": time.perf_counter(),
                                     "cpu": time.process_time()})
            return on_step_end(self, args, state, control)

        def log(self, args, state, control, logs):
            numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            _record["logs"].append({"step": state.global_step, **numbers})
            return on_log(self, args, state, control, logs)

        def train_end(self, args, state, control):
            _record["train_end_s"] = time.perf_counter()
            _record["maxrss_mb_train_end"] = _maxrss_mb()
            _write()
            return on_train_end(self, args, state, control)

        handler.on_train_begin, handler.on_step_end, handler.on_log, handler.on_train_end = (
            train_begin, step_end, log, train_end)

    class _Finder(importlib.abc.MetaPathFinder):
        """Finds transformers.trainer_callback like the other finders do, then patches it once loaded."""

        def find_spec(self, name, path, target=None):
            if name != _TARGET:
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None and spec.loader is not None:
                    exec_module = spec.loader.exec_module

                    def exec_and_patch(module, exec_module=exec_module):
                        exec_module(module)
                        _patch(module)

                    spec.loader.exec_module = exec_and_patch
                    return spec
            return None

    sys.meta_path.insert(0, _Finder())
    atexit.register(_write)

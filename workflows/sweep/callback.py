"""The Hydra callback of `-m` sweeps (conf/config.yaml, `hydra.callbacks.sweep`): it learns which
keys the command line sweeps and plans every variant before the first runs (check.py), then at the
end follows what the variants left running and prints the sweep table. A plain run (no `-m`) is
not touched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from workflows.sweep import check, table, variant

_exit_code = 0  # the sweep's: the worst of its variants'


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)).resolve()
        if found := check.problems(config, str(folder)):  # every variant planned before the first one runs
            print(f"error: {len(found)} of the sweep's variants cannot run as configured; none was started:",
                  file=sys.stderr)
            for line in found:
                print(f"  {line}", file=sys.stderr)
            raise SystemExit(2)
        variant.start(variant.Sweep(folder, check.variant_overrides(config)[1]))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _exit_code
        sweep = variant.current()
        if sweep is None or not sweep.variants:
            return
        for job in sweep.variants:
            if job.later is not None:  # submitted with the others: follow its jobs now
                print(f"\n==> sweep variant #{job.number} ({job.label}): following its jobs", flush=True)
                job.exit_code, job.later = job.later(), None
        _exit_code = max(job.exit_code or 0 for job in sweep.variants)
        if all(not (Path(job.run_dir) / "summary.json").exists() for job in sweep.variants):
            return  # a dry run, or nothing could start: each variant said why
        text, path = table.write(sweep)
        print(f"\n{text}\nWritten to {path} and {path.with_suffix('.md')}", flush=True)


def exit_code() -> int:
    return _exit_code


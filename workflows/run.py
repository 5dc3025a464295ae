"""Entry point: `python -m workflows.run +pipeline=sft_dpo [overrides]` (`-m` for a sweep).

Compose the config, validate and plan the whole DAG, decide what runs, hand the plan to a
launcher. Never imports torch, transformers or TRL: every stage runs in its own process (stages/).
"""

from __future__ import annotations

import contextlib
import signal
import sys

import hydra
from omegaconf import DictConfig

from posttrain.paths import CONF_DIR
from posttrain.tracking import TrackingError
from workflows.config import normalize_overrides, register
from workflows.config.compose import save_hydra_record
from workflows.config.schema import VERSION_BASE
from workflows.launchers import launcher_for
from workflows.planning import PlanError, build_plan
from workflows.planning.space import space_warning
from workflows.report.finish import finish
from workflows.report.plan_text import render_plan, write_plan
from workflows.state.decide import decide
from workflows.state.lock import BUSY_EXIT_CODE, RunDirBusy, lock_run_dir
from workflows.store.views import StoreError, adopt, attach
from workflows.sweep import callback, variant as sweep
from workflows.tracking import tracked

register()


@hydra.main(version_base=VERSION_BASE, config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> int:
    job = sweep.join(cfg)  # -m: this variant's own run_dir; None for a single run
    code = run(cfg, job)
    if job is None and code:
        sys.exit(code)
    if job is not None:
        job.exit_code = code
        if code == 130:
            raise SystemExit(code)  # Ctrl-C stops the whole sweep, not one variant
    return code


def run(cfg: DictConfig, job: sweep.Variant | None) -> int:
    """One pipeline invocation; its exit code (2: bad config or tracking store, 75: run_dir busy)."""
    try:
        if job is not None and job.problem:
            raise PlanError(str(cfg.get("name")), [job.problem])
        plan = build_plan(cfg)
        if not cfg.dry_run:
            lock_run_dir(plan.run_dir, wait=cfg.wait_for_lock)  # held until exit
            save_hydra_record(cfg, plan.run_dir)  # .hydra/ only by the invocation that holds run_dir
            adopt(plan)  # stage folders of a run_dir from before the store move into it
        decide(plan)  # what runs, from the store as it is now that we hold run_dir
        if not cfg.dry_run:
            attach(plan)  # <run_dir>/<stage> -> its store entry
    except PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (RunDirBusy, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return BUSY_EXIT_CODE
    except OSError as err:  # run_dir or the store unwritable, or its disk full
        print(f"error: cannot use run_dir {cfg.run_dir}: {err.strerror} ({err.filename})", file=sys.stderr)
        return 1
    if job is not None:
        sweep.tag(job, plan)
    print(render_plan(plan))
    if warning := space_warning(plan):
        print(warning, file=sys.stderr)
    launcher = launcher_for(plan.config["launcher"]["name"])
    if cfg.dry_run:
        if extra := launcher.dry_run(plan):  # e.g. the Slurm launcher prints its exact job scripts
            print(extra)
        return 0
    later = job is not None and sweep.follow_later(job, plan)  # a sweep submits every variant first
    stack = contextlib.ExitStack()
    try:
        write_plan(plan)  # <run_dir>/plan.json: `posttrain status` follows the run from it
        with stack:
            tracker = stack.enter_context(tracked(plan))  # checks the store first; ends runs with their true status
            results = launcher.run(plan, tracker)
            if later:  # the tracker stays open until the end of the sweep follows the jobs
                sweep.defer(job, plan, launcher, tracker, results, stack.pop_all())
                return 0
            return finish(plan, tracker, results)
    except OSError as err:  # any other write of the orchestrator's own (a job script) on a full disk
        print(f"error: could not write {err.filename}: {err.strerror}; stages that finished are kept (their "
              f"manifests); free space and run the same command again", file=sys.stderr)
        return 1
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept; run the same command again to continue", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the launcher asks the running stage to checkpoint and stop


def cli() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # kill, Slurm preemption or time limit: like Ctrl-C
    sys.argv[1:] = normalize_overrides(sys.argv[1:])
    main()
    sys.exit(callback.exit_code())  # a sweep's worst variant; 0 after a single run that succeeded


if __name__ == "__main__":
    cli()

"""Entry point: `python -m workflows.run +pipeline=sft_dpo [overrides]`.

Compose the config, validate and plan the whole DAG, decide what runs, hand the plan to a
launcher. Never imports torch, transformers or TRL: every stage runs in its own process (stages/).
"""

from __future__ import annotations

import signal
import sys

import hydra
from omegaconf import DictConfig

from posttrain.paths import CONF_DIR
from posttrain.status import OK
from posttrain.tracking import TrackingError
from workflows.config import normalize_overrides, register
from workflows.config.schema import VERSION_BASE
from workflows.launchers import launcher_for
from workflows.planning import PlanError, build_plan
from workflows.report.html import report_at_end
from workflows.report.plan_text import render_plan, write_plan
from workflows.report.summary import render_summary, write_summary
from workflows.state.decide import decide
from workflows.state.lock import BUSY_EXIT_CODE, RunDirBusy, lock_run_dir
from workflows.tracking import tracked

register()


@hydra.main(version_base=VERSION_BASE, config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        plan = build_plan(cfg)
        if not cfg.dry_run:
            lock_run_dir(plan.run_dir, wait=cfg.wait_for_lock)  # held until exit
        decide(plan)  # what runs, from the disk as it is now that we hold run_dir
    except PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunDirBusy as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(BUSY_EXIT_CODE)
    print(render_plan(plan))
    launcher = launcher_for(plan.config["launcher"]["name"])
    if cfg.dry_run:
        if extra := launcher.dry_run(plan):  # e.g. the Slurm launcher prints its exact job scripts
            print(extra)
        return
    write_plan(plan)  # <run_dir>/plan.json: `posttrain status` follows the run from it
    try:
        with tracked(plan) as tracker:  # checks the store first; ends every run with its true status
            results = launcher.run(plan, tracker)
            path = write_summary(plan, results)
            tracker.log_summary(path)
            if report := report_at_end(plan, results):  # <run_dir>/report.html: curves, evals, DAG
                tracker.log_summary(report)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept; run the same command again to continue", file=sys.stderr)
        sys.exit(130)
    print(render_summary(results, path))
    if any(r.status not in OK for r in results):
        sys.exit(1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the launcher asks the running stage to checkpoint and stop


def cli() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # kill, Slurm preemption or time limit: like Ctrl-C
    sys.argv[1:] = normalize_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()

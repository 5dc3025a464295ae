"""The `posttrain` command: `posttrain [command] [args]`.

    posttrain +pipeline=sft_dpo [overrides]     run a pipeline (the same as `python -m workflows.run ...`)
    posttrain run +pipeline=sft_dpo             the same, spelled out
    posttrain <command> --help                  one of COMMANDS below
    posttrain commands                          list them

Conventions every command follows: it is also `python -m <its module>`; its arguments are argparse
flags (a run_dir is positional, defaulting to the current directory's run); `--json` prints
machine-readable output where the command reports something; exit code 0 on success, 1 when what
it reports is a failure, 2 for bad arguments.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module whose main(argv) -> int runs it, one line of help). Plain data: a command is one line.
COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("workflows.status", "where every stage of a run_dir stands: step, ETA, errors, jobs, links"),
    "report": ("workflows.report.html", "write <run_dir>/report.html: curves, evaluations, the DAG, the summary"),
    "store": ("workflows.store.commands", "the stage store: `ls` its entries, `gc` what no run_dir uses"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "commands":
        width = max((len(n) for n in COMMANDS), default=4)
        print("posttrain [run] <hydra overrides>   run a pipeline")
        for name, (_, about) in COMMANDS.items():
            print(f"posttrain {name:<{width}}  {about}")
        return 0
    if argv and argv[0] in COMMANDS:
        return int(importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:]) or 0)
    if argv and argv[0] == "run":
        argv = argv[1:]
    from workflows import run  # here: the other commands need neither Hydra nor the planner

    sys.argv[1:] = argv
    run.cli()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""torchrun for a stage: `python -m stages.lib.torchrun <torchrun's arguments>`.

torch.distributed.run unchanged, except for how it takes a request to stop (stages/lib/interrupt.py:
the workers save a checkpoint at the end of the step and exit with 143). Running a 2-node stage
under Slurm showed plain torchrun losing that checkpoint both ways a job is told to stop:

- Slurm's early warning `--signal=USR1@N` goes to every process of the job step. torchrun does
  not handle USR1 and died of it (exit code 138); srun then killed the workers mid-checkpoint.
  Here USR1 is ignored; the workers act on it (and it stays ignored in them until the stage
  installs its handler, first thing).
- At the time limit (and on preemption or scancel) every process gets SIGTERM, torchrun too. It
  forwards it to the workers and waits for them, but a second SIGTERM during that wait (Slurm
  sends more than one) made it raise and exit 1, and srun killed the workers mid-checkpoint.
  Here SIGTERM is forwarded to the workers once, later ones are ignored, torchrun keeps
  watching them, and the workers still running SHUTDOWN_SECONDS later are killed (torchrun's
  own default) so none is left behind.
- When the workers stopped on a signal (exit code 143; any others were killed after them), this
  exits with 143 rather than torchrun's 1, so launchers report the stage `interrupted` (run the
  same command again to resume), not `failed`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from posttrain.stop import EXIT_CODE

SHUTDOWN_SECONDS = 30.0  # torchrun's --shutdown-timeout default: a worker gets this long to save and exit


def stopped_on_signal(exit_codes: list[int]) -> bool:
    """Whether workers with these exit codes stopped on a signal after saving, rather than crashed:
    one exited with EXIT_CODE and the rest did too or were killed (negative codes: torchrun ends
    the others when one exits)."""
    return EXIT_CODE in exit_codes and all(code == EXIT_CODE or code < 0 for code in exit_codes)


def _children() -> list[int]:
    """The pids of this process's children: torchrun's workers (Linux: /proc/self/task/*/children)."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


class _Forward:
    """SIGTERM handler: pass the first one to the workers, kill the ones left SHUTDOWN_SECONDS later."""

    def __init__(self) -> None:
        self.forwarded = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.forwarded:
            return
        self.forwarded = True
        workers = _children()
        _signal(workers, signum)
        timer = threading.Timer(SHUTDOWN_SECONDS, self.kill_left, (workers,))
        timer.daemon = True
        timer.start()

    @staticmethod
    def kill_left(workers: list[int]) -> None:
        _signal([pid for pid in _children() if pid in workers], signal.SIGKILL)  # still ours: no reused pid


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _Forward())
    # torchrun installs its own handlers for these when it starts the workers; not for SIGTERM (above)
    os.environ.setdefault("PET_SIGNALS_TO_HANDLE", "SIGINT,SIGHUP,SIGQUIT")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except ChildFailedError as err:
        codes = [failure.exitcode for failure in err.failures.values()]
        if not stopped_on_signal(codes):
            raise
        print(f"torchrun: the workers stopped on a signal (exit codes {codes}); exiting with {EXIT_CODE}",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_CODE)


if __name__ == "__main__":
    main()

"""Save a checkpoint and stop when a stage is asked to stop, so the next run resumes from there.

SIGTERM (Ctrl-C in the orchestrator, `kill`, Slurm preemption or time limit) and SIGUSR1 (Slurm's
early warning: `#SBATCH --signal=USR1@120` sends it 120 s before the limit to every task; with
`B:USR1` only the batch shell gets it and must forward it) set a flag. At the end of the current
optimizer step every rank saves its part of `checkpoints/checkpoint-<step>` (the same step on all
ranks), they wait for each other, and the process exits with EXIT_CODE; the orchestrator reports
the stage `interrupted` and the next run resumes it. Before training starts there is nothing to
save: a signal ends the stage at once with EXIT_CODE (posttrain.stop.exit_on_signal, from load_spec).
Under torchrun, stages/lib/torchrun.py keeps the launcher alive while its workers do this.
Slurm sends SIGKILL KillWait seconds (default 30) after SIGTERM: for big models ask for the USR1
warning early enough to finish a step and write a checkpoint.
"""

from __future__ import annotations

import os
import select
from typing import Any

from posttrain import stop
from posttrain.artifacts import StageDir
from posttrain.spec import StageSpec
from stages.lib.common import log

EXIT_CODE = stop.EXIT_CODE  # 128 + SIGTERM, as a shell reports a process ended by it
_log_file: list[str] = []  # this stage's stage.log, for output that has nobody left to read it


def _reader_gone(fd: int = 1) -> bool:
    """Whether `fd` is a pipe whose reading end is closed: the orchestrator that teed it to stage.log died."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _to_log_if_orphaned() -> None:
    """After a stop request: orphaned (workflows/launchers/lifetime.py), write to stage.log directly."""
    if _log_file and _reader_gone():
        fd = os.open(_log_file[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def _any_rank(flag: bool, device: Any) -> bool:
    """True on every rank if one rank was signalled: all ranks must save the same step together."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def save_on_signal(trainer: Any, spec: StageSpec) -> None:
    """Install the signal handlers and the callback that turns a signal into checkpoint-and-exit."""
    from transformers import TrainerCallback

    class SaveAndStop(TrainerCallback):
        stopping = False

        def on_step_end(self, args, state, control, **kwargs):
            if _any_rank(bool(stop.requested()), args.device):
                self.stopping = True
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_save(self, args, state, control, **kwargs):
            if self.stopping:
                # No rank exits before every rank has written its part of the checkpoint: the first
                # process to exit makes srun (--kill-on-bad-exit) and torchrun kill the others.
                trainer.accelerator.wait_for_everyone()
                why = stop.requested()[0] if stop.requested() else "a signal on another rank"
                log(spec, f"{why}: saved checkpoint-{state.global_step}; exiting with {EXIT_CODE}, "
                          f"the next run resumes from here")
                raise SystemExit(EXIT_CODE)

    _log_file[:] = [str(StageDir(spec.stage_dir).log_file)]
    stop.record_signals(_to_log_if_orphaned)  # until now (load_spec) a signal ended the process at once
    trainer.add_callback(SaveAndStop())

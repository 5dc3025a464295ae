"""A local stage process lives no longer than the orchestrator that started it.

Stages run in their own session (so Ctrl-C reaches only the orchestrator, which then asks the
stage to checkpoint and stop); a `kill -9` of the orchestrator therefore reaches no stage, and an
orphan would keep the run_dir lock (and a GPU's memory) until its next failed write. On Linux the
stage command is started through a small exec shim that sets PR_SET_PDEATHSIG: the kernel sends
the stage SIGTERM the moment its parent dies, and the stage saves a checkpoint at the end of the
current step and exits (before training starts, SIGTERM ends it at once). torchrun and deepspeed
forward that SIGTERM to their workers. The shim then exec()s the real command, so the process the
orchestrator watches is the stage itself. Where prctl is missing the command runs unchanged.

Only the local launcher uses this: a Slurm job must outlive the process that submitted it.
"""

from __future__ import annotations

import os
import signal
import sys

# Run with `python -S -c`: no site import, ~15 ms. argv: <orchestrator pid> <command...>.
# The getppid() check closes the race where the orchestrator died before prctl took effect.
_SHIM = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.prctl(1, %d, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('posttrain: the orchestrator is gone; not starting the stage')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
) % signal.SIGTERM


def with_parent_lifetime(command: list[str]) -> list[str]:
    """`command`, started so that it receives SIGTERM when this process dies (Linux); else unchanged."""
    if not sys.platform.startswith("linux") or not command:
        return command
    return [sys.executable, "-S", "-c", _SHIM, str(os.getpid()), *command]

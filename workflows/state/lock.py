"""One invocation at a time per run_dir: an fcntl lock on <run_dir>/.posttrain/lock.

The orchestrator takes it before deciding what to run and holds it until it exits; the kernel
releases it when the process dies (even on kill -9), so there is no stale lock to clean up.
Stage processes inherit the open lock (`held_fds`): a stage left running by an orchestrator that
was killed still holds it, and no second invocation can start training the same stage beside it.
With the Slurm launcher the lock covers planning and submission only.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

BUSY_EXIT_CODE = 75  # EX_TEMPFAIL: try again later
_held: dict[str, int] = {}  # run_dir -> open, locked file descriptor


class RunDirBusy(Exception):
    """Another invocation (or a stage process it started) is using this run_dir."""


def lock_path(run_dir: str) -> Path:
    return Path(run_dir) / ".posttrain" / "lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return "another posttrain run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    alive = info.get("host") != socket.gethostname() or _alive(info.get("pid", 0))
    who = f"posttrain run pid {info.get('pid')} on {info.get('host')}, started {started}"
    if not alive:  # its stage process inherited the lock and is still running
        who += ", no longer running, but a stage process it started still is"
    return f"{who}: {info.get('command', '?')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def lock_run_dir(run_dir: str, wait: bool = False) -> bool:
    """Take the run_dir's lock for the rest of this process. Returns True if it had to wait.

    Raises:
        RunDirBusy: another holder, and `wait` is false; the message names it and what to do.
    """
    if run_dir in _held:
        return False
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    waited = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            os.close(fd)
            raise RunDirBusy(
                f"{run_dir} is in use by {_holder(path)}\n"
                f"  Wait for it to finish and run again, add wait_for_lock=true to wait, or use another run_dir."
            ) from None
        print(f"waiting for {_holder(path)} to release {run_dir} ...", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
        waited = True
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join([os.path.basename(sys.executable), "-m", "workflows.run", *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _held[run_dir] = fd
    return waited


def held_fds() -> tuple[int, ...]:
    """The locks this process holds, for `subprocess.Popen(pass_fds=...)`."""
    return tuple(_held.values())

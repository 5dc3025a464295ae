"""fcntl locks: one invocation at a time per run_dir, and one writer at a time per store entry.

The run_dir lock (<run_dir>/.posttrain/lock) is taken before deciding what to run and held until
the orchestrator exits. A store entry's lock (workflows/store/) is held exclusively while its
stage trains (another run that needs it waits, then reuses it) and shared while a run uses it
(garbage collection and a forced re-run wait for readers). The kernel releases a lock when the
process dies (even on kill -9), so there is no stale lock to clean up. Stage processes inherit the
open locks (`held_fds`): a stage left running by an orchestrator that was killed still holds them,
and no second invocation can start training the same stage beside it. With the Slurm launcher the
locks cover planning and submission only.
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
_entries: dict[str, tuple[int, bool]] = {}  # entry lock file -> (open descriptor, exclusive)


class RunDirBusy(Exception):
    """Another invocation (or a stage process it started) is using this run_dir."""


def lock_path(run_dir: str) -> Path:
    return Path(run_dir) / ".posttrain" / "lock"


def holder(path: Path) -> str:
    """Who last took the lock in `path` exclusively (pid, host, start time, command)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return "another posttrain run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    alive = info.get("host") != socket.gethostname() or pid_running(info.get("pid", 0))
    who = f"posttrain run pid {info.get('pid')} on {info.get('host')}, started {started}"
    if not alive:  # its stage process inherited the lock and is still running
        who += ", no longer running, but a stage process it started still is"
    return f"{who}: {info.get('command', '?')}"


def pid_running(pid: int) -> bool:
    """Is there a process `pid` on this machine (running, or a zombie: see observe.py)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _sign(fd: int) -> None:
    """Write who holds the lock into the lock file, for whoever waits for it."""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join([os.path.basename(sys.executable), "-m", "workflows.run", *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def lock_run_dir(run_dir: str, wait: bool = False) -> bool:
    """Take the run_dir's lock for the rest of this process. Returns True if it had to wait.

    Raises:
        RunDirBusy: another holder, and `wait` is false; the message names it and what to do.
    """
    if run_dir in _held:
        return False
    path = lock_path(run_dir)
    fd = _open(path)
    waited = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            os.close(fd)
            raise RunDirBusy(
                f"{run_dir} is in use by {holder(path)}\n"
                f"  Wait for it to finish and run again, add wait_for_lock=true to wait, or use another run_dir."
            ) from None
        print(f"waiting for {holder(path)} to release {run_dir} ...", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
        waited = True
    _sign(fd)
    _held[run_dir] = fd
    return waited


def held_run_dirs() -> list[str]:
    return list(_held)


def hold_entry(path: Path, exclusive: bool, wait: bool = True) -> bool | None:
    """Hold the lock file of a store entry, shared or exclusive, until `release_entry` or exit.

    One descriptor per entry in this process: asking again converts the lock (shared <-> exclusive;
    the kernel drops the old one first, so two converting processes never deadlock). Returns True
    if it had to wait, False if it did not, None when `wait` is false and another process holds it.
    """
    key = str(path)
    fd = _entries[key][0] if key in _entries else _open(path)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    waited = False
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            if key not in _entries:
                os.close(fd)
            return None
        fcntl.flock(fd, mode)
        waited = True
    if exclusive:
        _sign(fd)
    _entries[key] = (fd, exclusive)
    return waited


def release_entry(path: Path) -> None:
    fd, _ = _entries.pop(str(path), (None, False))
    if fd is not None:
        os.close(fd)  # closing the last descriptor of the open file releases its flock


def entry_busy(path: Path) -> bool:
    """Whether any other process holds the entry's lock (shared or exclusive), without waiting."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def held_fds() -> tuple[int, ...]:
    """The locks this process holds, for `subprocess.Popen(pass_fds=...)`."""
    return (*_held.values(), *(fd for fd, _ in _entries.values()))

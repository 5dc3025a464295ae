"""<stage>/stage.log as the orchestrator appends a stage's output to it, and what a full disk does to it.

A stage that dies of a full disk (ENOSPC while it saves a checkpoint) prints its traceback last,
when there is no room left for it. So when the log is opened, RESERVE bytes are set aside beside
it (`.stage.log.reserve`); the first write that fails with ENOSPC deletes the reserve and retries,
so the failed attempt's last words land in stage.log. Whatever still cannot be written is kept
(the last KEPT_LINES lines) and written when the log is closed if space came back; the log never
raises, and `error` says what went wrong.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from pathlib import Path

RESERVE = 1 << 20  # bytes set aside for a failing stage's traceback (a few KB to a few hundred KB)
KEPT_LINES = 2000  # lines kept in memory while the disk is full
RESERVE_NAME = ".stage.log.reserve"


def _reserve(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        return False
    try:
        try:
            os.posix_fallocate(fd, 0, RESERVE)
        except (AttributeError, OSError):  # a filesystem without fallocate: write the bytes
            os.write(fd, b"\0" * RESERVE)
        return True
    except OSError:
        os.close(fd)
        fd = -1
        path.unlink(missing_ok=True)
        return False
    finally:
        if fd >= 0:
            os.close(fd)


class StageLog:
    """Append-only, unbuffered (one write per line, so a failure is seen at once), never raises."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.reserve = self.path.with_name(RESERVE_NAME)
        self.error: OSError | None = None  # the first write error, if any
        self.unwritten: deque[bytes] = deque(maxlen=KEPT_LINES)
        self.has_reserve = _reserve(self.reserve)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as err:
            self.fd, self.error = -1, err

    @property
    def disk_full(self) -> bool:
        return self.error is not None and self.error.errno in (errno.ENOSPC, errno.EDQUOT)

    def _write(self, data: bytes) -> bytes:
        """Write `data`; returns what could not be written."""
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
        return data

    def write(self, line: str) -> None:
        data = line.encode("utf-8", "replace")
        if self.fd < 0 or self.unwritten:  # the disk was full: keep lines in order until close()
            self.unwritten.append(data)
            return
        try:
            self._write(data)
        except OSError as err:
            self.error = self.error or err
            if self.has_reserve and err.errno in (errno.ENOSPC, errno.EDQUOT):
                self.reserve.unlink(missing_ok=True)  # room for the last words, now
                self.has_reserve = False
                try:
                    self._write(data)
                    return
                except OSError:
                    pass
            self.unwritten.append(data)

    def close(self) -> None:
        if self.fd >= 0:
            if self.unwritten:
                try:
                    self._write(b"".join(self.unwritten))
                    self.unwritten.clear()
                except OSError:
                    pass
            os.close(self.fd)
            self.fd = -1
        self.reserve.unlink(missing_ok=True)

    def __enter__(self) -> StageLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_bytes(path: str | Path) -> int | None:
    """Bytes available to this user on the filesystem holding `path` (its nearest existing ancestor)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def disk_full(folder: str | Path, log: StageLog | None, tail: list[str]) -> bool:
    """Whether a stage that failed in `folder` ran out of disk: its log could not be written, it said
    so (Python's `[Errno 28]`, Rust's `os error 28`), or the filesystem is (almost) full now. torch's
    own message for a failed save ("file write failed") names no cause, hence the last test."""
    if log is not None and log.disk_full:
        return True
    if any("No space left on device" in line or "Errno 28" in line or "os error 28" in line for line in tail):
        return True
    free = free_bytes(folder)
    return free is not None and free < 2 * RESERVE

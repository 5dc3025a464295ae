"""A stage process's stop request: set by its signal handler (stages/lib/interrupt.py), read by
whatever must end the process's records truthfully (a tracker ends its run as KILLED, not FAILED)."""

from __future__ import annotations

EXIT_CODE = 143  # 128 + SIGTERM: a stage that saved a checkpoint on a signal and stopped; the next run resumes
_requested: list[str] = []  # names of the signals received, in order


def request(signal_name: str) -> None:
    _requested.append(signal_name)


def requested() -> list[str]:
    return list(_requested)

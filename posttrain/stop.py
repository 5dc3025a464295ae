"""A stage process's stop request: set by the signal handlers installed here (a stage ends at once
before training starts, then saves a checkpoint first: stages/lib/interrupt.py), read by whatever
must end the process's records truthfully (a tracker ends its run as KILLED, not FAILED). Stdlib only."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

EXIT_CODE = 143  # 128 + SIGTERM: a stage that saved a checkpoint on a signal and stopped; the next run resumes
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # kill / preemption / time limit, and Slurm's early warning
_requested: list[str] = []  # names of the signals received, in order


_also: list[Callable[[], None]] = []  # run by the recording handler after it records (record_signals)


def _record(signum: int, frame: Any) -> None:
    # Later signals are only recorded too: torchrun forwards SIGTERM to its workers a second time.
    request(signal.Signals(signum).name)
    for hook in _also:
        hook()


def _record_and_exit(signum: int, frame: Any) -> None:
    request(signal.Signals(signum).name)
    raise SystemExit(EXIT_CODE)


def exit_on_signal() -> None:
    """Until a stage can save its work: SIGNALS end the process now with EXIT_CODE (atexit handlers
    run, so a tracker ends its run as KILLED). A stage calls this first thing, so a signal during
    start-up is not lost; under stages/lib/torchrun.py SIGUSR1 is ignored until then."""
    for sig in SIGNALS:
        signal.signal(sig, _record_and_exit)


def record_signals(also: Callable[[], None] | None = None) -> None:
    """From now on SIGNALS only record a stop request (and call `also`): the trainer saves a
    checkpoint at the end of its step and then exits (stages/lib/interrupt.py)."""
    _also[:] = [also] if also else []
    for sig in SIGNALS:
        signal.signal(sig, _record)


def request(signal_name: str) -> None:
    _requested.append(signal_name)


def requested() -> list[str]:
    return list(_requested)

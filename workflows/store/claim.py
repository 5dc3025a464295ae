"""One writer per store entry: a stage runs only while its run holds the entry's lock exclusively.

Two runs that need the same missing stage at once (two pipelines sharing an SFT stage, two
terminals): the first trains it; the second waits, then decides again from the entry as the first
left it: done (it is `cached`), interrupted (it resumes the checkpoint), or failed (it trains).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from posttrain.pipeline import Plan, PlannedStage
from workflows.state.decide import redecide
from workflows.state.lock import hold_entry, holder, release_entry
from workflows.store.views import store_of

RETRY_SECONDS = 1.0


def _lock(plan: Plan, stage: PlannedStage) -> Path:
    return store_of(plan).lock_file(Path(stage.stage_dir))


@contextlib.contextmanager
def claim(plan: Plan, stage: PlannedStage) -> Iterator[bool]:
    """Hold `stage`'s entry exclusively for as long as the block runs; yields whether the stage
    still has to run (False: another run finished it meanwhile, and `stage` is now cached).
    Afterwards the lock is kept shared: this run goes on using the entry."""
    lock = _lock(plan, stage)
    if redecide(plan, stage):  # finished by another run since this one planned: no need to wait
        print(f"==> {stage.name}: trained meanwhile by another run; reusing {stage.stage_dir}", flush=True)
        hold_entry(lock, exclusive=False)  # this run uses it from now on
        yield False
        return
    if hold_entry(lock, exclusive=True, wait=False) is None:
        print(f"==> {stage.name}: waiting for {holder(lock)}, which is using its store entry "
              f"{stage.stage_dir} ...", flush=True)
        hold_entry(lock, exclusive=True)
    try:
        if redecide(plan, stage):
            print(f"==> {stage.name}: trained meanwhile by another run; reusing {stage.stage_dir}", flush=True)
            yield False
        else:
            yield True
    finally:
        hold_entry(lock, exclusive=False)


@contextlib.contextmanager
def claim_all(plan: Plan, stages: list[PlannedStage]) -> Iterator[None]:
    """Hold all these entries exclusively (a scheduler submitting them): all at once or none, so two
    submitters never wait for each other in a circle. Released afterwards: the jobs write them."""
    locks = sorted({_lock(plan, s) for s in stages})
    told = False
    while True:
        taken = []
        for lock in locks:
            if hold_entry(lock, exclusive=True, wait=False) is None:
                break
            taken.append(lock)
        if len(taken) == len(locks):
            break
        for lock in taken:
            release_entry(lock)
        if not told:
            busy = locks[len(taken)]
            print(f"==> waiting for {holder(busy)}, which is using the store entry {busy.stem} ...", flush=True)
            told = True
        time.sleep(RETRY_SECONDS)
    try:
        yield
    finally:
        for lock in locks:
            release_entry(lock)

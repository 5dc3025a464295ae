"""One invocation at a time per run_dir (workflows/state/lock.py)."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from tests.conftest import run_cli
from tests.workflows.state.conftest import BRANCHES
from workflows.state.lock import RunDirBusy, lock_run_dir


def _hold(run_dir: str, ready, release) -> None:
    lock_run_dir(run_dir)
    ready.set()
    release.wait(30)


def test_a_second_invocation_is_refused_naming_the_first(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        proc = run_cli(*BRANCHES, f"run_dir={tmp_path}", "tracking=none")
        assert proc.returncode == 75, proc.stdout + proc.stderr
        assert f"{tmp_path} is in use by posttrain run pid {holder.pid}" in proc.stderr
        assert "wait_for_lock=true" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "checkpoint").exists()  # nothing started
    finally:
        release.set()
        holder.join(30)
    lock_run_dir(str(tmp_path))  # released when its holder exits


def test_wait_for_lock_waits_for_the_holder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "r"), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RunDirBusy):
            lock_run_dir(str(tmp_path / "r"))
        start = time.time()
        ctx_timer = multiprocessing.get_context("fork").Process(target=lambda: (time.sleep(1.0), release.set()))
        ctx_timer.start()
        assert lock_run_dir(str(tmp_path / "r"), wait=True) is True
        assert time.time() - start >= 0.9
        ctx_timer.join()
    finally:
        release.set()
        holder.join(30)

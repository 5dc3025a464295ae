"""A stage started by the local launcher stops within seconds of its orchestrator's death (kill -9 reaches
only the orchestrator: stages run in their own session): while it trains it saves a checkpoint first, while
it starts it just ends; torchrun's workers go with it. The run_dir lock is free again; the next run resumes."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess

import pytest

from posttrain.artifacts import StageDir
from tests.conftest import ROOT
from tests.integration.conftest import alive, descendants, env, wait_for
from workflows.state.lock import lock_path

pytestmark = pytest.mark.slow
GONE_WITHIN_S = 15


def orphan(command: list[str], ready) -> tuple[list[int], subprocess.Popen]:
    """Start the orchestrator, wait for `ready(stage processes)`, kill -9 it; returns its stage processes."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(lambda: ready(descendants(proc.pid)), 400, "the stage to start")
    stages = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return stages, proc


def lock_is_free(run_dir) -> bool:
    fd = os.open(lock_path(str(run_dir)), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_stages_stop_when_their_orchestrator_dies(tmp_path, sft_only):
    run_dir = tmp_path / "run"
    log = StageDir(run_dir / "sft").log_file
    training = sft_only(run_dir, "tracking=none", "stages.sft.trainer.max_steps=2000", "stages.sft.trainer.save_steps=1000")
    stages, _ = orphan(training, lambda procs: procs and log.is_file() and "[sft] step 2/" in log.read_text())
    wait_for(lambda: not any(alive(p) for p in stages), GONE_WITHIN_S, "the orphaned stage to stop")
    text = log.read_text()
    assert "saved checkpoint-" in text and "exiting with 143" in text, text[-2000:]  # written by the orphan itself
    assert StageDir(run_dir / "sft").complete_checkpoints(), "the orphan saved a checkpoint to resume from"
    assert lock_is_free(run_dir)

    starting = sft_only(tmp_path / "run2", "tracking=none", "stages.sft.resources.runner=torchrun")
    stages, _ = orphan(starting, lambda procs: len(procs) >= 2)  # torchrun and its worker, still importing
    wait_for(lambda: not any(alive(p) for p in stages), GONE_WITHIN_S, "torchrun and its worker to stop")
    assert lock_is_free(tmp_path / "run2")

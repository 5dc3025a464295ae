"""A stage process's progress records (stages/lib/progress.py), each in a real child process so its
exit hooks run: what a reader finds after the process failed, stopped on a signal, finished, or
resumed an earlier attempt. No model: the training callback calls these same functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from posttrain.artifacts import StageDir
from tests.conftest import ROOT

PRELUDE = """
import sys
from posttrain import stop
from posttrain.artifacts import Manifest, StageDir
from posttrain.spec import StageSpec
from stages.lib import progress
spec = StageSpec(name="sft", type="sft", stage_dir=sys.argv[1], model_dir=sys.argv[1] + "/model", seed=0,
                 fingerprint="f" * 64)
progress.start(spec)
progress.begin(int(sys.argv[2]), 10)
"""


def _stage(tmp_path: Path, body: str, first_step: int = 0) -> subprocess.CompletedProcess:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, str(tmp_path), str(first_step)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)


def test_an_exception_is_recorded_with_its_last_line_and_the_steps_before_it(tmp_path):
    proc = _stage(tmp_path, """
        progress.log_step(2, 10, {"loss": 3.5, "learning_rate": 1e-3})
        progress.log_step(4, 10, {"loss": 3.0})
        raise ValueError("CUDA out of memory, or so")
    """)
    assert proc.returncode == 1 and "ValueError: CUDA out of memory" in proc.stderr  # the traceback still prints
    progress = StageDir(tmp_path).read_progress()
    assert progress.phase == "failed" and progress.error == "ValueError: CUDA out of memory, or so"
    assert (progress.step, progress.max_steps, progress.fingerprint) == (4, 10, "f" * 64)
    assert progress.pid != os.getpid() and progress.updated_at >= progress.started_at
    assert progress.metrics == {"loss": 3.0, "learning_rate": 1e-3}  # the latest value of each
    assert [e["step"] for e in StageDir(tmp_path).read_history()] == [2, 4]


def test_a_stop_on_a_signal_is_interrupted_and_a_message_exit_failed(tmp_path):
    stopped = _stage(tmp_path / "a", """
        progress.log_step(3, 10, {"loss": 1.0})
        stop.request("SIGTERM")
        raise SystemExit(143)
    """)
    assert stopped.returncode == 143
    assert StageDir(tmp_path / "a").read_progress().phase == "interrupted"
    refused = _stage(tmp_path / "b", """
        raise SystemExit("[sft] data is not valid, found 1 problem")
    """)
    assert refused.returncode == 1
    progress = StageDir(tmp_path / "b").read_progress()
    assert progress.phase == "failed" and progress.error is None  # the message went to stage.log


def test_a_stage_that_wrote_its_manifest_is_done(tmp_path):
    proc = _stage(tmp_path, """
        progress.log_step(10, 10, {"loss": 0.5})
        StageDir(sys.argv[1]).write_manifest(Manifest("sft", "sft", "f" * 64, sys.argv[1] + "/model"))
    """)
    assert proc.returncode == 0, proc.stderr
    assert StageDir(tmp_path).read_progress().phase == "done"


def test_a_resumed_attempt_keeps_the_history_up_to_its_checkpoint(tmp_path):
    (tmp_path / "stage.log").write_text("first attempt's lines\n")
    history = [{"step": s, "loss": float(10 - s)} for s in (2, 4, 6, 8)]  # killed after step 8, checkpoint at 4
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history))
    proc = _stage(tmp_path, """
        progress.log_step(6, 10, {"loss": 1.5})
    """, first_step=4)
    assert proc.returncode == 0, proc.stderr
    kept = [{k: v for k, v in e.items() if k != "time"} for e in StageDir(tmp_path).read_history()]
    assert kept == [{"step": 2, "loss": 8.0}, {"step": 4, "loss": 6.0}, {"step": 6, "loss": 1.5}]
    progress = StageDir(tmp_path).read_progress()
    assert progress.first_step == 4 and progress.log_start == len("first attempt's lines\n")
    assert progress.phase == "failed"  # it exited without a manifest

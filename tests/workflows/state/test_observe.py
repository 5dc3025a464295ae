"""What a run_dir says about its stages (workflows/state/observe.py), from hand-made run_dirs in each
state: finished (and moved since), a failed stage, a crash (kill -9 of everything), a run still
going, a stage queued at a scheduler. The same files real runs leave: tests/integration/test_observability.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posttrain.artifacts import FINGERPRINT_FILE, PLAN_FILE, SUMMARY, Manifest, Progress, StageDir
from posttrain.pipeline import PlanRecord, StageRecord
from workflows.launchers import JobState
from workflows.state import observe as observe_module
from workflows.state.observe import NotARunDir, last_error, observe, run_dir_argument

STAGES = (("checkpoint", "checkpoint", []), ("sft", "sft", ["checkpoint"]), ("dpo", "dpo", ["sft"]),
          ("eval", "eval", ["checkpoint", "sft", "dpo"]))


def _record(recorded_run_dir: Path, pid: int, started_at: float, launcher: str = "local",
            tracking: str = "none", reasons: dict[str, str] | None = None) -> PlanRecord:
    stages = [StageRecord(name, type_, upstream, (reasons or {}).get(name, "new"), str(recorded_run_dir / name),
                          str(recorded_run_dir / name / "model"), f"{name}-fp") for name, type_, upstream in STAGES]
    return PlanRecord("sft_dpo", str(recorded_run_dir), stages, launcher, tracking, started_at, pid,
                      socket.gethostname(), "python -m workflows.run +pipeline=sft_dpo", "Plan for ...")


def _write(run_dir: Path, record: PlanRecord) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PLAN_FILE).write_text(json.dumps(record.to_dict()))


def _done(run_dir: Path, name: str, **metrics: float) -> None:
    StageDir(run_dir / name).write_manifest(Manifest(name, name, f"{name}-fp", str(run_dir / name / "model"),
                                                     metrics=dict(metrics)))


def _summary(run_dir: Path, statuses: dict[str, tuple[str, str]], finished_at: float) -> None:
    stages = [{"name": n, "type": n, "status": s, "reason": r, "output_dir": str(run_dir / n / "model"),
               "wall_seconds": 12.0, "metrics": {}, "extra": {}} for n, (s, r) in statuses.items()]
    (run_dir / SUMMARY).write_text(json.dumps({"pipeline": "sft_dpo", "finished_at": finished_at, "stages": stages}))


def _progress(run_dir: Path, name: str, pid: int, started_at: float, **fields) -> None:
    StageDir(run_dir / name).write_progress(Progress(stage=name, pid=pid, host=socket.gethostname(),
                                                     started_at=started_at, updated_at=time.time(), **fields))


def _checkpoint(run_dir: Path, name: str, step: int) -> None:
    folder = StageDir(run_dir / name)
    (folder.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
    (folder.checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": f"{name}-fp"}))


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_finished_run_moved_since_shows_cached_and_completed_stages_with_links(tmp_path):
    run_dir, started = tmp_path / "copy", time.time() - 100
    _write(run_dir, _record(tmp_path / "original", 1, started, tracking="mlflow", reasons={"checkpoint": "cached"}))
    for name in ("checkpoint", "sft", "dpo", "eval"):
        _done(run_dir, name, train_loss=1.25)
    _summary(run_dir, {"checkpoint": ("cached", ""), "sft": ("completed", ""), "dpo": ("completed", ""),
                       "eval": ("completed", "")}, finished_at=time.time())
    (run_dir / "dpo" / "mlflow_run.json").write_text(json.dumps(
        {"run_id": "abc123", "tracking_uri": "http://mlflow.lab:5000", "experiment_id": "7"}))
    state = observe(str(run_dir))
    assert state.state == "finished"
    assert {s.name: s.status for s in state.stages} == {"checkpoint": "cached", "sft": "completed",
                                                       "dpo": "completed", "eval": "completed"}
    dpo = state.stages[2]
    assert dpo.run_link == "http://mlflow.lab:5000/#/experiments/7/runs/abc123"
    assert dpo.stage_dir == str(run_dir / "dpo") and dpo.output_dir == str(run_dir / "dpo" / "model")
    assert dpo.fingerprint == "dpo-fp" and "took 12s" in dpo.detail and "train_loss 1.25" in dpo.detail
    assert state.stages[1].run_link is None  # no record of a tracked run


def test_a_failed_stage_shows_its_last_error_line_and_the_skipped_stage_after_it(tmp_path, dead_pid):
    run_dir, started = tmp_path / "run", time.time() - 100
    _write(run_dir, _record(run_dir, dead_pid, started))
    _done(run_dir, "checkpoint")
    _done(run_dir, "sft")
    (run_dir / "dpo").mkdir()
    (run_dir / "dpo" / "stage.log").write_text(
        "[dpo] step 2/10  loss 1.1  3s\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
        "RuntimeError: the reference model is not on this device\n")
    _progress(run_dir, "dpo", dead_pid, started + 10, phase="failed", step=2, max_steps=10)
    _summary(run_dir, {"checkpoint": ("completed", ""), "sft": ("completed", ""),
                       "dpo": ("failed", "exit code 1; see dpo/stage.log"), "eval": ("skipped", "upstream 'dpo' failed")},
             finished_at=time.time())
    state = observe(str(run_dir))
    dpo, evaluation = state.stages[2], state.stages[3]
    assert dpo.status == "failed" and dpo.error == "RuntimeError: the reference model is not on this device"
    assert dpo.detail.startswith("RuntimeError: the reference model") and "exit code 1" in dpo.detail
    assert (evaluation.status, evaluation.detail) == ("skipped", "upstream 'dpo' failed")


def test_after_kill_9_of_everything_the_stage_is_interrupted_at_its_checkpoint(tmp_path, dead_pid):
    run_dir, started = tmp_path / "run", time.time() - 100
    _write(run_dir, _record(run_dir, dead_pid, started))  # the orchestrator is gone, and wrote no summary
    _done(run_dir, "checkpoint")
    _progress(run_dir, "sft", dead_pid, started + 5, phase="training", step=7, max_steps=10, training_since=started + 6)
    _checkpoint(run_dir, "sft", 6)
    state = observe(str(run_dir))
    assert state.state == "stopped" and not state.orchestrator["alive"]
    sft = state.stages[1]
    assert sft.status == "interrupted" and sft.resume_from == "checkpoint-6" and sft.step == 7
    assert "is gone at step 7/10" in sft.detail and "resumes from checkpoint-6" in sft.detail
    assert [s.status for s in state.stages[2:]] == ["not started", "not started"]


def test_a_run_still_going_shows_the_step_eta_and_what_waits(tmp_path):
    run_dir, started = tmp_path / "run", time.time() - 60
    _write(run_dir, _record(run_dir, os.getpid(), started))  # this process plays the orchestrator
    _done(run_dir, "checkpoint")
    _done(run_dir, "sft")
    stage_yaml = run_dir / "dpo" / "stage.yaml"  # a process whose command line names the stage, as a stage's does
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(stage_yaml)])
    while str(stage_yaml) not in Path(f"/proc/{child.pid}/cmdline").read_bytes().decode():
        time.sleep(0.01)  # the kernel shows the new command line a moment after exec
    try:
        _progress(run_dir, "dpo", child.pid, started + 10, phase="training", step=30, max_steps=100,
                  training_since=time.time() - 30, metrics={"loss": 0.693, "rewards/accuracies": 0.6})
        state = observe(str(run_dir))
    finally:
        child.kill()
        child.wait()
    assert state.state == "running" and state.orchestrator["alive"]
    dpo, evaluation = state.stages[2], state.stages[3]
    assert dpo.status == "running" and (dpo.step, dpo.max_steps) == (30, 100)
    assert dpo.eta_seconds == pytest.approx(70, abs=5)  # 30 steps in 30 s, 70 to go
    assert dpo.detail.startswith("step 30/100, ETA 1m") and "rewards/accuracies 0.6" in dpo.detail
    assert (evaluation.status, evaluation.detail) == ("queued", "waiting for dpo")
    # the same record with the stage's process gone: no longer running
    assert observe(str(run_dir)).stages[2].status == "failed"


def test_a_stage_waiting_in_a_scheduler_queue_shows_its_job(tmp_path, monkeypatch):
    run_dir, started = tmp_path / "run", time.time() - 60
    _write(run_dir, _record(run_dir, 1, started, launcher="slurm"))
    _done(run_dir, "checkpoint")
    _summary(run_dir, {"checkpoint": ("completed", ""), "sft": ("submitted", "job 41"), "dpo": ("submitted", "job 42"),
                       "eval": ("submitted", "job 43")}, finished_at=started + 2)  # submitted, not waited for

    class Scheduler:
        def job_state(self, stage_dir: str) -> JobState | None:
            name = os.path.basename(stage_dir)
            if name == "sft":
                return JobState("TestScheduler", "41", "RUNNING", running=True, submitted_at=started + 1)
            if name == "eval":  # ended before its process said a word
                return JobState("TestScheduler", "43", "CANCELLED", "DependencyNeverSatisfied", cancelled=True,
                                submitted_at=started + 1)
            return JobState("TestScheduler", "42", "PENDING", "Dependency", queued=True, submitted_at=started + 1)

    monkeypatch.setattr(observe_module, "launcher_for", lambda name: Scheduler())
    _progress(run_dir, "sft", 999999, started + 30, phase="training", step=4, max_steps=8,
              training_since=time.time() - 8)
    state = observe(str(run_dir))
    sft, dpo = state.stages[1], state.stages[2]
    assert state.state == "running"  # the submitting command is done; its jobs are not
    assert sft.status == "running" and sft.detail.startswith("TestScheduler job 41 RUNNING; step 4/8, ETA")
    assert sft.job["job_id"] == "41"
    assert dpo.status == "queued" and dpo.detail == "TestScheduler job 42 PENDING (Dependency)"
    evaluation = state.stages[3]
    assert evaluation.status == "cancelled"  # not `submitted`, as the summary written at submission says
    assert evaluation.detail == "TestScheduler job 43 CANCELLED (DependencyNeverSatisfied)"


def test_the_last_error_line_is_this_attempts(tmp_path):
    folder = StageDir(tmp_path)
    earlier = "ValueError: an earlier attempt's error\n"
    folder.log_file.write_text(earlier + "[sft] step 1/4  loss 2  1s\n[sft] saving the model\n")
    assert last_error(folder) == "ValueError: an earlier attempt's error"
    assert last_error(folder, start=len(earlier)) == "[sft] saving the model"  # no error in this attempt's lines
    assert last_error(StageDir(tmp_path / "none")) is None


def test_a_folder_posttrain_never_ran_in_is_not_a_run_dir(tmp_path, monkeypatch):
    with pytest.raises(NotARunDir, match="no plan.json or summary.json"):
        observe(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert run_dir_argument("given") == "given"
    assert run_dir_argument(None) == "."  # nothing better to offer: the command says what is missing
    for name, age in (("old", 100), ("new", 10)):
        (tmp_path / "outputs" / name).mkdir(parents=True)
        (tmp_path / "outputs" / name / PLAN_FILE).write_text("{}")
        os.utime(tmp_path / "outputs" / name / PLAN_FILE, (time.time() - age, time.time() - age))
    assert run_dir_argument(None) == str(Path("outputs") / "new")

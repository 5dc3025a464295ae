"""A stage folder's records (posttrain/artifacts.py): the manifest round-trips with its extra keys
flat in the JSON, only checkpoints whose trainer_state.json is whole count as complete, progress
gives an ETA from the attempt's own rate, and the history has one entry per logged step."""

from __future__ import annotations

import json

import pytest

from posttrain.artifacts import HISTORY_FILE, MANIFEST, PROGRESS_FILE, Manifest, Progress, StageDir


def test_manifest_round_trip_keeps_extra_keys_flat(tmp_path):
    manifest = Manifest(name="sft", type="sft", fingerprint="abc", model_dir=str(tmp_path / "model"),
                        inputs={"policy_init": "/m"}, files=["model.safetensors"], metrics={"train_loss": 1.5},
                        world_size=2, extra={"weights_sha256": "d" * 64, "resumed_from": "checkpoint-3"})
    folder = StageDir(tmp_path)
    folder.write_manifest(manifest)
    on_disk = json.loads((tmp_path / MANIFEST).read_text())
    assert "extra" not in on_disk
    assert on_disk["weights_sha256"] == "d" * 64 and on_disk["resumed_from"] == "checkpoint-3"
    assert on_disk["finished_at"] > 0  # stamped when written
    assert set(on_disk) == {"name", "type", "fingerprint", "model_dir", "inputs", "files", "metrics", "finished_at",
                            "world_size", "weights_sha256", "resumed_from"}
    assert folder.read_manifest() == manifest
    assert Manifest.from_dict(on_disk).to_dict() == on_disk
    assert manifest.missing_files(manifest.model_dir) == ["model.safetensors"]


def test_no_manifest_reads_as_none(tmp_path):
    assert StageDir(tmp_path).read_manifest() is None
    (tmp_path / MANIFEST).write_text('{"name": "sft", "fingerp')  # cut short: not a manifest
    assert StageDir(tmp_path).read_manifest() is None


def test_complete_checkpoints_ignore_a_truncated_trainer_state(tmp_path):
    folder = StageDir(tmp_path)
    for step in (2, 4, 10):
        (folder.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        (folder.checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "log_history": []}))
    (folder.checkpoints / "checkpoint-12").mkdir()  # killed before the Trainer wrote its state
    (folder.checkpoints / "checkpoint-12" / "trainer_state.json").write_text('{"global_step": 12, "log_hist')
    (folder.checkpoints / "checkpoint-14").mkdir()  # killed earlier still: no state at all
    (folder.checkpoints / "checkpoint-last").mkdir()  # not a step
    (folder.checkpoints / "checkpoint-last" / "trainer_state.json").write_text('{"global_step": 1}')
    assert folder.complete_checkpoints() == [(2, folder.checkpoints / "checkpoint-2"),
                                             (4, folder.checkpoints / "checkpoint-4"),
                                             (10, folder.checkpoints / "checkpoint-10")]  # by step, not by name
    assert StageDir(tmp_path / "never_ran").complete_checkpoints() == []


def test_progress_round_trips_and_its_eta_follows_this_attempts_rate(tmp_path):
    folder = StageDir(tmp_path)
    progress = Progress(stage="dpo", pid=123, host="node1", started_at=100.0, updated_at=150.0, phase="training",
                        step=40, max_steps=100, first_step=20, training_since=110.0, metrics={"loss": 0.5})
    folder.write_progress(progress)
    assert folder.read_progress() == progress
    # 20 steps in 40 s since the resumed step 20: 60 more take 120 s, 10 of them gone since the last record
    assert progress.eta_seconds(now=160.0) == pytest.approx(110.0)
    assert Progress("dpo", 1, "h", 0.0, 0.0).eta_seconds() is None  # no step yet: no rate
    (tmp_path / PROGRESS_FILE).write_text('{"stage": "dpo"}')  # a record without its required fields
    assert folder.read_progress() is None


def test_history_keeps_one_entry_per_step_the_later_attempt_winning(tmp_path):
    folder = StageDir(tmp_path)
    lines = [{"step": 2, "loss": 3.0}, {"step": 4, "loss": 2.5}, {"step": 4, "eval_loss": 2.9},
             {"step": 6, "loss": 9.9},  # logged by an attempt that was killed before its next checkpoint ...
             {"step": 6, "loss": 2.0, "flag": True}]  # ... and again by the attempt that resumed it
    (tmp_path / HISTORY_FILE).write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"step": 8, "lo')
    assert folder.read_history() == [{"step": 2, "loss": 3.0}, {"step": 4, "loss": 2.5, "eval_loss": 2.9},
                                     {"step": 6, "loss": 2.0}]  # a cut last line is skipped, a bool is no metric


def test_history_of_a_stage_without_history_jsonl_is_its_newest_checkpoints_log(tmp_path):
    folder = StageDir(tmp_path)
    for step, losses in ((2, [3.0]), (4, [3.0, 2.5])):
        (folder.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        log = [{"step": 2 * (i + 1), "loss": v, "epoch": 0.1} for i, v in enumerate(losses)]
        (folder.checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "log_history": log}))
    assert folder.read_history() == [{"step": 2, "loss": 3.0, "epoch": 0.1}, {"step": 4, "loss": 2.5, "epoch": 0.1}]
    assert StageDir(tmp_path / "never_ran").read_history() == []

"""A stage folder's records (posttrain/artifacts.py): the manifest round-trips with its extra keys
flat in the JSON, and only checkpoints whose trainer_state.json is whole (and, of several processes,
whose every rank saved its part) count as complete."""

from __future__ import annotations

import json

from posttrain.artifacts import MANIFEST, RANKS_SAVED, Manifest, StageDir


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


def test_a_checkpoint_of_several_processes_is_complete_once_every_rank_saved(tmp_path):
    folder = StageDir(tmp_path)
    for step in (4, 8):
        path = folder.checkpoints / f"checkpoint-{step}"
        path.mkdir(parents=True)
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))  # rank 0's, written first
        (path / "rng_state_0.pth").write_bytes(b"rank 0")
    (folder.checkpoints / "checkpoint-4" / RANKS_SAVED).write_text(json.dumps({"world_size": 2, "step": 4}))
    # checkpoint-8: rank 1 was killed before it finished its part, so rank 0 never marked it
    assert folder.complete_checkpoints() == [(4, folder.checkpoints / "checkpoint-4")]

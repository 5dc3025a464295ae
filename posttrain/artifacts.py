"""A stage folder's layout, and its manifest: the record that says the stage is done.

    <run_dir>/<stage>/
      stage.yaml        the StageSpec the process read (posttrain/spec.py)
      stage.log         everything the process printed, appended across attempts
      fingerprint.json  the fingerprint of the latest attempt and what it was computed from
      checkpoints/      the Trainer's checkpoint-N folders, for resuming
      model/ adapter/ dataset/ results/   the outputs (which ones depends on the stage type)
      manifest.json     written last and atomically: a folder without it is not done
      completions.jsonl RL stages: sampled completions with their rewards, per logging step
      gated.json        the verdict of a gate that refused to start the stage
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.jsonio import read_json, write_json

STAGE_YAML = "stage.yaml"
STAGE_LOG = "stage.log"
FINGERPRINT_FILE = "fingerprint.json"
CHECKPOINTS = "checkpoints"
MODEL, ADAPTER, DATASET, RESULTS = "model", "adapter", "dataset", "results"
MANIFEST = "manifest.json"
GATED_FILE = "gated.json"
SUMMARY = "summary.json"  # in the run_dir: one entry per stage of the latest invocation
COMPLETIONS_FILE = "completions.jsonl"  # <stage>/completions.jsonl: an RL stage's scored samples (stages/lib/rl.py)
TABLE_FILE = "table.txt"  # <stage>/results/table.txt: the models a stage measured, side by side
# What a stage writes in its folder; cleared before a run that does not resume (stage.log is kept).
STAGE_OUTPUTS = (CHECKPOINTS, MODEL, ADAPTER, DATASET)
# A stage type's `output` -> its folder (a reward model is a model dir too, with a sequence-classification head).
OUTPUT_DIRS = {"model": MODEL, "reward_model": MODEL, "dataset": DATASET, "metrics": RESULTS}


@dataclass
class Manifest:
    """manifest.json: the stage's outputs and final metrics. Keys beyond these are kept in `extra`
    (weights digests, what it resumed from, the models an eval measured ...)."""

    name: str
    type: str
    fingerprint: str | None
    model_dir: str
    inputs: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # relative to model_dir: all must exist for the stage to count
    metrics: dict[str, Any] = field(default_factory=dict)
    finished_at: float = 0.0
    world_size: int = 1  # processes that produced it
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS = ("name", "type", "fingerprint", "model_dir", "inputs", "files", "metrics", "finished_at", "world_size")

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self._FIELDS}, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {k: data[k] for k in cls._FIELDS if k in data}
        known.setdefault("name", "?")
        known.setdefault("type", "?")
        known.setdefault("fingerprint", None)
        known.setdefault("model_dir", "")
        return cls(**known, extra={k: v for k, v in data.items() if k not in cls._FIELDS})

    def missing_files(self, model_dir: str) -> list[str]:
        """Its output files that are not (or no longer) in `model_dir`."""
        return [rel for rel in self.files if not (Path(model_dir) / rel).is_file()]


class StageDir:
    """The paths of one stage's folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def spec_file(self) -> Path:
        return self.path / STAGE_YAML

    @property
    def log_file(self) -> Path:
        return self.path / STAGE_LOG

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    def read_manifest(self) -> Manifest | None:
        data = read_json(self.manifest_file)
        return None if data is None else Manifest.from_dict(data)

    def write_manifest(self, manifest: Manifest) -> None:
        """Atomic: a reader sees the old manifest, none, or all of the new one."""
        if not manifest.finished_at:
            manifest.finished_at = time.time()
        write_json(self.manifest_file, manifest.to_dict())

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of every checkpoint whose trainer_state.json (the Trainer writes it last)
        is whole, oldest first. A folder cut short by a kill has none, or a truncated one."""
        out = []
        for path in self.checkpoints.glob("checkpoint-*") if self.checkpoints.is_dir() else []:
            step = path.name.removeprefix("checkpoint-")
            state = read_json(path / "trainer_state.json")
            if step.isdigit() and state is not None and "global_step" in state:
                out.append((int(step), path))
        return sorted(out)

"""A stage folder's layout, and its manifest: the record that says the stage is done.

    <run_dir>/<stage>/
      stage.yaml        the StageSpec the process read (posttrain/spec.py)
      stage.log         everything the process printed, appended across attempts
      fingerprint.json  the fingerprint of the latest attempt and what it was computed from
      checkpoints/      the Trainer's checkpoint-N folders, for resuming
      ranks/            rank-<r>.json: where each process of the latest attempt ran (stages/lib/ranks.py)
      model/ adapter/ dataset/ results/   the outputs (which ones depends on the stage type)
      manifest.json     written last and atomically: a folder without it is not done
      completions.jsonl RL stages: sampled completions with their rewards, per logging step
      gated.json        the verdict of a gate that refused to start the stage
      progress.json     where the stage process is (step, max_steps, latest metrics, pid), rewritten
                        atomically as it goes: `posttrain status` reads it during a run and after a crash
      history.jsonl     one line per logging step of the attempt (and the attempts it resumed)
      mlflow_run.json   the tracking run of the latest attempt (posttrain/tracking/mlflow/pipeline.py)

    <run_dir>/plan.json    the latest invocation's plan (stages, reasons, fingerprints, who runs it)
    <run_dir>/summary.json what became of each stage (written at the end of an invocation)
    <run_dir>/report.html  curves, evaluations, the DAG and the summary in one file
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from posttrain.jsonio import read_json, write_json

STAGE_YAML = "stage.yaml"
STAGE_LOG = "stage.log"
FINGERPRINT_FILE = "fingerprint.json"
CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"  # in checkpoint-N/: the Trainer writes it last (rank 0)
# In checkpoint-N/ of a multi-process stage: rank 0 writes it once every rank has saved its part
# (rng_state_<rank>.pth, ZeRO's optimizer shards): trainer_state.json does not wait for them.
RANKS_SAVED = "ranks_saved.json"
MODEL, ADAPTER, DATASET, RESULTS = "model", "adapter", "dataset", "results"
RANKS = "ranks"
MANIFEST = "manifest.json"
GATED_FILE = "gated.json"
PROGRESS_FILE = "progress.json"
HISTORY_FILE = "history.jsonl"
SUMMARY = "summary.json"  # in the run_dir: one entry per stage of the latest invocation
COMPLETIONS_FILE = "completions.jsonl"  # <stage>/completions.jsonl: an RL stage's scored samples (stages/lib/rl.py)
PLAN_FILE = "plan.json"  # in the run_dir: the latest invocation's plan, written before any stage starts
REPORT_FILE = "report.html"  # in the run_dir
METRICS_FILE = "metrics.json"  # <stage>/results/metrics.json: {model: {metric: value}} of a stage that compares models
TABLE_FILE = "table.txt"  # <stage>/results/table.txt: the models a stage measured, side by side
# What a stage writes in its folder; cleared before a run that does not resume (stage.log is kept).
STAGE_OUTPUTS = (CHECKPOINTS, MODEL, ADAPTER, DATASET, RANKS)
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


@dataclass
class Progress:
    """progress.json: what a stage process is doing, rewritten atomically by its main process (stages/lib/progress.py).
    Readers need no lock: they see the previous record or the new one."""

    stage: str
    pid: int
    host: str
    started_at: float  # this attempt's process start
    updated_at: float
    phase: str = "starting"  # starting | training | evaluating | failed | interrupted
    step: int = 0
    max_steps: int = 0
    first_step: int = 0  # the step this attempt started from (a resumed checkpoint's), for the rate
    training_since: float | None = None  # when this attempt's first step began
    metrics: dict[str, float] = field(default_factory=dict)  # the latest logged values
    fingerprint: str | None = None
    log_start: int = 0  # size of stage.log when the attempt began: its own lines come after
    error: str | None = None  # the exception that ended it (phase `failed`)

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds to `max_steps` at this attempt's rate so far, or None before two points are known."""
        if not self.training_since or not self.max_steps or self.step <= self.first_step:
            return None
        rate = (self.step - self.first_step) / max(self.updated_at - self.training_since, 1e-9)
        since_update = (now or time.time()) - self.updated_at
        return max(0.0, (self.max_steps - self.step) / rate - since_update)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress | None:
        names = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:  # a record of another version, missing required fields
            return None


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

    @property
    def progress_file(self) -> Path:
        return self.path / PROGRESS_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    def read_progress(self) -> Progress | None:
        data = read_json(self.progress_file)
        return None if data is None else Progress.from_dict(data)

    def write_progress(self, progress: Progress) -> None:
        write_json(self.progress_file, asdict(progress), indent=None)

    def read_history(self) -> list[dict[str, Any]]:
        """Every logged step, oldest first: `{"step": N, <metric>: value, ...}`, one entry per step (a step
        logged twice, as a resumed attempt redoes the steps after its checkpoint, keeps the later values).
        Without history.jsonl (a stage of an older posttrain), the newest checkpoint's Trainer log."""
        entries: list[dict[str, Any]] = []
        try:
            lines = self.history_file.read_text().splitlines()
        except OSError:
            lines = []
            complete = self.complete_checkpoints()
            state = read_json(complete[-1][1] / "trainer_state.json") if complete else None
            entries = [e for e in (state or {}).get("log_history", []) if isinstance(e, dict)]
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a killed process may be cut short
            if isinstance(entry, dict):
                entries.append(entry)
        by_step: dict[int, dict[str, Any]] = {}
        for entry in entries:
            if isinstance(entry.get("step"), int):
                by_step.setdefault(entry["step"], {"step": entry["step"]}).update(
                    {k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        return [by_step[step] for step in sorted(by_step)]

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of every checkpoint whose trainer_state.json (the Trainer writes it last)
        is whole, oldest first. A folder cut short by a kill has none, or a truncated one. A checkpoint
        of several processes (rng_state_0.pth) also needs RANKS_SAVED: rank 0 writes trainer_state.json
        without waiting for the other ranks' files."""
        out = []
        for path in self.checkpoints.glob("checkpoint-*") if self.checkpoints.is_dir() else []:
            step = path.name.removeprefix("checkpoint-")
            state = read_json(path / TRAINER_STATE)
            if not step.isdigit() or state is None or "global_step" not in state:
                continue
            if (path / "rng_state_0.pth").exists() and read_json(path / RANKS_SAVED) is None:
                continue
            out.append((int(step), path))
        return sorted(out)

"""Stage fingerprints: a sha256 per stage over what decides its result — its spec minus the keys that
only change how a run is watched or stored, every local path replaced by the identity of what it
points to, and its upstreams' fingerprints (README.md, "Never redo finished work"). Pure and fast:
every plan, dry runs included, runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from posttrain.hashing import FileHashes, folder_identity
from posttrain.pipeline import Plan, PlannedStage

# Spec keys that do not change a stage's result: where it writes, how it is tracked, and what
# this module adds itself. A key another module adds to the spec that changes every invocation
# (a run id, a timestamp) must be listed here, or nothing will ever be cached.
VOLATILE_SPEC_KEYS = frozenset({
    "name", "stage_dir", "model_dir", "tracking", "cache_dir", "fingerprint", "fingerprint_inputs", "resume_from",
})
# TRL/Trainer fields that change how a run is watched, saved or scheduled, never the weights it
# ends with nor its final metrics. Kept (conservatively): anything touching data order, batch
# size, precision, evaluation, `precompute_ref_log_probs`, `load_best_model_at_end`.
VOLATILE_TRAINER_KEYS = frozenset({
    # logging and trackers
    "logging_steps", "logging_strategy", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "report_to", "run_name", "project", "disable_tqdm",
    "skip_memory_metrics", "include_num_input_tokens_seen", "trackio_space_id", "trackio_bucket_id",
    "trackio_static_space_id",
    # checkpoint cadence: where a resume can start from, not where training ends
    "save_steps", "save_strategy", "save_total_limit", "save_on_each_node", "save_only_model",
    "enable_jit_checkpoint", "restore_callback_states_from_checkpoint",
    # the hub
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push",
    "hub_revision",
    # speed and memory only: same math
    "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_persistent_workers",
    "dataloader_pin_memory", "dataloader_multiprocessing_context", "dataset_num_proc",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "activation_checkpointing",
    "activation_checkpointing_kwargs", "activation_offloading",
    "torch_empty_cache_steps", "ddp_timeout", "ddp_find_unused_parameters", "ddp_bucket_cap_mb",
    "precompute_ref_batch_size", "per_device_eval_batch_size", "eval_accumulation_steps", "debug",
})


class _Identifier:
    """Replaces local paths in a spec by the identity of what they point to."""

    def __init__(self, stage_dirs: dict[str, str], hashes: FileHashes):
        self.stage_dirs = stage_dirs
        self.hashes = hashes

    def stage_of(self, path: str) -> str | None:
        for name, folder in self.stage_dirs.items():
            if path == folder or path.startswith(folder + os.sep):
                rel = os.path.relpath(path, folder)
                return f"stage:{name}" + ("" if rel == "." else f"/{rel}")
        return None

    def value(self, value: Any, content: bool) -> Any:
        if isinstance(value, dict):
            return {k: self.value(v, content or k in ("data", "sources", "eval_sources")) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, content) for v in value]
        if not isinstance(value, str) or not (value.startswith(("/", "./", "../", "~"))
                                              or ("/" in value and os.path.exists(value))):
            return value  # a number, a name, a hub id
        path = os.path.abspath(os.path.expanduser(value))
        if stage := self.stage_of(path):
            return stage
        if os.path.isfile(path):
            return "sha256:" + self.hashes.sha256(Path(path))
        if os.path.isdir(path):
            return "dir:" + folder_identity(Path(path), self.hashes, content=content)
        return value  # not there (yet): the planner or the stage reports it


def fingerprint_record(stage: PlannedStage, identify: _Identifier, upstream: dict[str, str]) -> dict[str, Any]:
    """What the fingerprint of `stage` is computed from (recorded in <stage>/fingerprint.json)."""
    record: dict[str, Any] = {}
    for key, value in stage.spec.to_dict().items():
        if key in VOLATILE_SPEC_KEYS:
            continue
        if key == "trainer":
            value = {k: v for k, v in (value or {}).items() if k not in VOLATILE_TRAINER_KEYS}
        elif key == "resources":  # nodes x processes changes the global batch; the runner does not
            value = {"world_size": (value.get("nodes") or 1) * (value.get("processes_per_node") or 1)}
        record[key] = identify.value(value, content=key == "data")
    record["upstream"] = {name: upstream[name] for name in stage.upstream}
    return record


def digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(plan: Plan) -> None:
    """Set every stage's `spec.fingerprint` and `spec.fingerprint_inputs`, upstreams first."""
    hashes = FileHashes()
    identify = _Identifier({s.name: s.stage_dir for s in plan.stages if not s.external}, hashes)
    fingerprints: dict[str, str] = {}
    for stage in plan.stages:
        record = fingerprint_record(stage, identify, fingerprints)
        fingerprints[stage.name] = digest(record)
        stage.spec.fingerprint = fingerprints[stage.name]
        stage.spec.fingerprint_inputs = record
    hashes.save()

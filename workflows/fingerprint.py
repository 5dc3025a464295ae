"""Stage fingerprints, and why each stage of a plan runs or is skipped (`PlannedStage.reason`).

A stage's fingerprint is a sha256 over what decides its result:
- its resolved spec minus the keys that only change how a run is watched or stored
  (VOLATILE_SPEC_KEYS, VOLATILE_TRAINER_KEYS: logging, checkpoint cadence, hub pushes, tracking,
  dataloader workers, gradient checkpointing);
- every local path in the spec replaced by the identity of what it points to: a data file or
  folder by its bytes; a model or tokenizer folder by its small files' bytes plus its large files'
  sizes and modification times (workflows/hashing.py); a path inside an upstream stage's folder by
  that stage's name, whose fingerprint is in `upstream`. Hub ids stay as written, with their
  revision (pin a commit for the fingerprint to mean the content);
- the fingerprints of the stages it depends on, so a change propagates downstream.
Paths of the stage's own outputs are left out, so the same pipeline fingerprints the same in any
run_dir. Code versions (posttrain, TRL, torch) and the machine are not fingerprinted: after an
upgrade or a move that should change results, re-run with `force=all`.

A stage is done only when <stage>/manifest.json (written last and atomically by the stage) carries
the current fingerprint, its model files exist, its upstream manifests are older than it, and no
upstream runs again in this invocation. <stage>/fingerprint.json records the fingerprint and its
inputs of the latest attempt: it says whether the checkpoints in <stage>/checkpoints may be
resumed, and which keys changed since.

Pure and fast (no torch, no datasets): every plan, dry runs included, runs this.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflows.hashing import FileHashes, folder_identity

if TYPE_CHECKING:
    from workflows.plan import Plan, PlannedStage

MANIFEST = "manifest.json"
FINGERPRINT_FILE = "fingerprint.json"
# What a stage writes in its folder; cleared before a run that does not resume (stage.log is kept).
STAGE_OUTPUTS = ("checkpoints", "model", "adapter", "dataset")

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
# Spec keys that come from the pipeline-wide config rather than stages.<name>.
_GLOBAL_KEYS = {"seed": "seed", "chat_template": "model.chat_template", "tokenizer": "model.tokenizer",
                "revision": "model.revision", "model": "model"}
SHOW_KEYS = 3  # changed keys named in a reason before "(+N more)"


# ---------------------------------------------------------------------------------------------
# Fingerprints


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


def stage_inputs(stage: PlannedStage, identify: _Identifier, upstream: dict[str, str]) -> dict[str, Any]:
    """What the fingerprint of `stage` is computed from (recorded in <stage>/fingerprint.json)."""
    record: dict[str, Any] = {}
    for key, value in stage.spec.items():
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


# ---------------------------------------------------------------------------------------------
# What is on disk


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def complete_checkpoints(stage_dir: str) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint whose trainer_state.json (the Trainer writes it last) is
    whole, oldest first. A folder cut short by a kill has none, or a truncated one."""
    folder = Path(stage_dir) / "checkpoints"
    out = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        step = path.name.removeprefix("checkpoint-")
        state = read_json(path / "trainer_state.json")
        if step.isdigit() and state is not None and "global_step" in state:
            out.append((int(step), path))
    return sorted(out)


def _outputs_missing(stage: PlannedStage, manifest: dict[str, Any]) -> bool:
    model_dir = Path(stage.spec["model_dir"])
    return any(not (model_dir / rel).is_file() for rel in manifest.get("files") or [])


# ---------------------------------------------------------------------------------------------
# Why a stage runs


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _user_key(stage_name: str, key: str) -> str:
    """`trainer.beta` of stage dpo -> `stages.dpo.trainer.beta` (the override that changes it)."""
    top = key.split(".")[0].split("[")[0]
    if top in _GLOBAL_KEYS:
        return _GLOBAL_KEYS[top] + key[len(top):]
    if top == "resources":
        return f"stages.{stage_name}.resources (nodes x processes_per_node)"
    return f"stages.{stage_name}.{key}"


def _names(items: list[str]) -> str:
    items = list(dict.fromkeys(items))
    more = f" (+{len(items) - SHOW_KEYS} more)" if len(items) > SHOW_KEYS else ""
    return ", ".join(items[:SHOW_KEYS]) + more


def describe_change(stage: PlannedStage, old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """`config changed: stages.dpo.trainer.beta`, `data changed: prefs.jsonl`, `upstream changed: sft`."""
    if old is None:
        return "config changed"  # a manifest from before fingerprints were recorded
    before, after = _flatten(old), _flatten(new)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, ()) != after.get(k, ()))
    spec_values = _flatten(stage.spec)
    upstream, data, config = [], [], []
    for key in changed:
        if key.startswith("upstream."):
            upstream.append(key.removeprefix("upstream."))
        elif key.startswith("data.") and key.endswith(".path") and isinstance(spec_values.get(key), str):
            data.append(os.path.basename(spec_values[key].rstrip("/")) or spec_values[key])
        else:
            config.append(_user_key(stage.name, key))
    parts = []
    if config:
        parts.append(f"config changed: {_names(config)}")
    if data:
        parts.append(f"data changed: {_names(data)}")
    if upstream:
        parts.append(f"upstream changed: {_names(upstream)}")
    return "; ".join(parts) or "config changed"


def _finished_after(stage: PlannedStage, plan: Plan, moment: float) -> list[str]:
    """Upstream stages whose current output was written after `moment` (this stage's own work)."""
    return [up for up in stage.upstream if not plan.stage(up).external
            and (read_json(Path(plan.stage(up).stage_dir) / MANIFEST) or {}).get("finished_at", 0) > moment]


def _decide(stage: PlannedStage, plan: Plan, forced: bool, runs: dict[str, bool]) -> tuple[str, str | None]:
    """(reason, checkpoint to resume from or None) for one stage; `runs` holds the upstream decisions."""
    fingerprint = stage.spec["fingerprint"]
    folder = Path(stage.stage_dir)
    manifest = read_json(folder / MANIFEST)
    previous = read_json(folder / FINGERPRINT_FILE)
    rerun = [u for u in stage.upstream if runs.get(u)]
    if forced:
        return "forced", None
    if manifest is not None and manifest.get("fingerprint") == fingerprint and not rerun:
        if newer := _finished_after(stage, plan, manifest.get("finished_at", 0)):
            return f"upstream re-ran: {_names(newer)}", None
        if _outputs_missing(stage, manifest):
            return "incomplete: model files missing", None
        return "cached", None
    last = (previous or {}).get("fingerprint") or (manifest or {}).get("fingerprint")
    if manifest is not None and not last:
        return "no fingerprint in its manifest (made by an older posttrain)", None
    if last and last != fingerprint:
        old = (previous or {}).get("inputs") if (previous or {}).get("fingerprint") == last else None
        return describe_change(stage, old, stage.spec["fingerprint_inputs"]), None
    if rerun:
        return f"upstream re-runs: {_names(rerun)}", None
    checkpoints = complete_checkpoints(stage.stage_dir)
    if checkpoints and last == fingerprint:
        # checkpoints trained on an upstream's earlier output (it ran again since) are not resumed
        if newer := _finished_after(stage, plan, (previous or {}).get("prepared_at", 0)):
            return f"upstream re-ran: {_names(newer)}", None
        return f"resume from {checkpoints[-1][1].name}", checkpoints[-1][1].name
    if manifest is not None or previous is not None or any((folder / o).exists() for o in STAGE_OUTPUTS):
        return "incomplete: no manifest", None
    return "new", None


def _forced(plan: Plan) -> set[str]:
    """The stages `force=` names; PlanError for a name the plan does not have."""
    from workflows.plan import PlanError

    names = [s.name for s in plan.stages]
    force = plan.config.get("force") or []
    if isinstance(force, str):
        force = [force]
    if "all" in force:
        return set(names)
    unknown = [f for f in force if f not in names]
    if unknown:
        problems = []
        for name in unknown:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"force: '{name}' is not a stage of this plan (stages: {', '.join(names)}, or all){hint}")
        raise PlanError(plan.name, problems)
    return set(force)


def annotate(plan: Plan) -> Plan:
    """Set every stage's fingerprint (spec `fingerprint`, `fingerprint_inputs`), its reason and,
    when it resumes, `spec['resume_from']`.

    Raises:
        PlanError: `force=` names a stage the plan does not have.
    """
    forced = _forced(plan)
    hashes = FileHashes()
    identify = _Identifier({s.name: s.stage_dir for s in plan.stages if not s.external}, hashes)
    fingerprints: dict[str, str] = {}
    runs: dict[str, bool] = {}
    for stage in plan.stages:
        record = stage_inputs(stage, identify, fingerprints)
        fingerprints[stage.name] = digest(record)
        stage.spec["fingerprint"] = fingerprints[stage.name]
        stage.spec["fingerprint_inputs"] = record
        if stage.external:
            stage.reason, resume = "given", None
        else:
            stage.reason, resume = _decide(stage, plan, stage.name in forced, runs)
        stage.spec["resume_from"] = resume
        runs[stage.name] = stage.reason not in ("cached", "given")
    hashes.save()
    return plan


# ---------------------------------------------------------------------------------------------
# Before a stage process starts (any launcher)


def prepare_stage_dir(stage: PlannedStage) -> None:
    """Make <stage_dir> ready for a run of `stage`: it is not done until the stage writes its
    manifest again; outputs of another attempt are cleared unless this run resumes its checkpoint
    (same fingerprint, `resume_from`), and half-written checkpoints are dropped either way."""
    folder = Path(stage.stage_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    if stage.spec.get("resume_from"):
        complete = {path for _, path in complete_checkpoints(stage.stage_dir)}
        for path in (folder / "checkpoints").glob("checkpoint-*"):
            if path not in complete:
                shutil.rmtree(path, ignore_errors=True)
    else:
        for name in STAGE_OUTPUTS:
            shutil.rmtree(folder / name, ignore_errors=True)
    record = {"fingerprint": stage.spec["fingerprint"], "inputs": stage.spec["fingerprint_inputs"],
              "prepared_at": time.time()}
    tmp = folder / (FINGERPRINT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, folder / FINGERPRINT_FILE)

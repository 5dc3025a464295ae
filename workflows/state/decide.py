"""Why each stage of a plan runs or is skipped (`PlannedStage.reason`), and readying its folder.

A stage's folder is its store entry, `<store>/<type>/<fingerprint>/` (workflows/store/), shared by
every pipeline and run_dir that has the same stage. It is done only when its manifest.json (written
last and atomically by the stage) carries the current fingerprint, its model files exist, its
upstream manifests are older than it, and no upstream runs again in this invocation.
fingerprint.json records the fingerprint and its inputs of the latest attempt: it says whether the
checkpoints may be resumed. Which keys changed is told against the attempt `<run_dir>/<stage>`
pointed at before (another entry, or a stage folder from before the store).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from posttrain.artifacts import FINGERPRINT_FILE, STAGE_LOG, STAGE_OUTPUTS, TRAINER_STATE, StageDir
from posttrain.jsonio import read_json, write_json
from posttrain.pipeline import Plan, PlannedStage
from posttrain.status import Status
from workflows.state.fingerprint import fingerprint
from workflows.state.lock import held_run_dirs
from workflows.store.views import legacy, recorded_fingerprint, relocate, view_path

# Spec keys that come from the pipeline-wide config rather than stages.<name>.
_GLOBAL_KEYS = {"seed": "seed", "chat_template": "model.chat_template", "model": "model"}
SHOW_KEYS = 3  # changed keys named in a reason before "(+N more)"
NEW = "new"


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


def _user_key(stage: PlannedStage, key: str) -> str:
    """`trainer.beta` of stage dpo -> `stages.dpo.trainer.beta` (the override that changes it)."""
    top = key.split(".")[0].split("[")[0]
    if top in _GLOBAL_KEYS:
        return _GLOBAL_KEYS[top] + key[len(top):]
    if top == "resources":
        return f"stages.{stage.name}.resources (nodes x processes_per_node)"
    if top == "settings":  # a stage type's own block: stages.<name>.<type>.*
        return f"stages.{stage.name}.{stage.type}{key[len(top):]}"
    return f"stages.{stage.name}.{key}"


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
    spec_values = _flatten(stage.spec.to_dict())
    upstream, data, config = [], [], []
    for key in changed:
        if key.startswith("upstream."):
            upstream.append(key.removeprefix("upstream."))
        elif key.startswith("data.") and key.endswith(".path") and isinstance(spec_values.get(key), str):
            data.append(os.path.basename(spec_values[key].rstrip("/")) or spec_values[key])
        else:
            config.append(_user_key(stage, key))
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
    out = []
    for up in stage.upstream:
        upstream = plan.stage(up)
        manifest = None if upstream.external else upstream.dir.read_manifest()
        if manifest is not None and manifest.finished_at > moment:
            out.append(up)
    return out


def _empty(folder: StageDir) -> bool:
    return not folder.manifest_file.exists() and not (folder / FINGERPRINT_FILE).exists() and \
        not any((folder / o).exists() for o in STAGE_OUTPUTS)


def _since_view(stage: PlannedStage, view: StageDir) -> str:
    """`new`, or what changed since the attempt `<run_dir>/<stage>` pointed at until now."""
    last = recorded_fingerprint(view) if view.path.is_dir() else None
    if not last or last == stage.spec.fingerprint:
        return NEW
    record = read_json(view / FINGERPRINT_FILE) or {}
    old = record.get("inputs") if record.get("fingerprint") == last else None
    return describe_change(stage, old, stage.spec.fingerprint_inputs or {})


def _decide(stage: PlannedStage, plan: Plan, forced: bool, runs: dict[str, bool]) -> tuple[str, str | None]:
    """(reason, checkpoint to resume from or None) for one stage; `runs` holds the upstream decisions."""
    current = stage.spec.fingerprint
    folder, view = stage.dir, StageDir(view_path(plan, stage))
    if legacy(view.path) and _empty(folder) and recorded_fingerprint(view) == current:
        folder = view  # a run_dir from before the store, judged where it is (a run moves it into the store)
    manifest = folder.read_manifest()
    previous = read_json(folder / FINGERPRINT_FILE)
    rerun = [u for u in stage.upstream if runs.get(u)]
    if forced:
        return "forced", None
    if _empty(folder):
        return _since_view(stage, view), None  # nothing of it in the store: new, whatever its upstreams do
    if manifest is not None and manifest.fingerprint == current and not rerun:
        if newer := _finished_after(stage, plan, manifest.finished_at):
            return f"upstream re-ran: {_names(newer)}", None
        if manifest.missing_files(str(folder / os.path.relpath(stage.spec.model_dir, stage.stage_dir))):
            return "incomplete: model files missing", None
        return Status.CACHED.value, None
    last = (previous or {}).get("fingerprint") or (manifest.fingerprint if manifest else None)
    if manifest is not None and not last:
        return "no fingerprint in its manifest (made by an older posttrain)", None
    if last and last != current:
        old = (previous or {}).get("inputs") if (previous or {}).get("fingerprint") == last else None
        return describe_change(stage, old, stage.spec.fingerprint_inputs or {}), None
    if rerun:
        return f"upstream re-runs: {_names(rerun)}", None
    checkpoints = folder.complete_checkpoints()
    if checkpoints and last == current:
        # Checkpoints trained on an upstream's earlier output (it ran again since) are not resumed:
        # an upstream that finished after the checkpoint was written. Not after the stage was
        # prepared: on Slurm every stage of a chain is prepared at submission, before its upstreams run.
        written = (checkpoints[-1][1] / TRAINER_STATE).stat().st_mtime
        if newer := _finished_after(stage, plan, written):
            return f"upstream re-ran: {_names(newer)}", None
        return f"resume from {checkpoints[-1][1].name}", checkpoints[-1][1].name
    if manifest is not None or previous is not None or any((folder / o).exists() for o in STAGE_OUTPUTS):
        return "incomplete: no manifest", None
    return NEW, None


def decide(plan: Plan) -> Plan:
    """Fingerprint every stage, then set its reason and, when it resumes, `spec.resume_from`.
    Reads the run_dir as it is: call it once the run_dir is locked (or for a dry run)."""
    fingerprint(plan)
    relocate(plan)  # each stage's folder is now its store entry, named by the fingerprint
    force = plan.config.get("force") or []
    forced = {s.name for s in plan.stages} if "all" in force else set([force] if isinstance(force, str) else force)
    runs: dict[str, bool] = {}
    for stage in plan.stages:
        if stage.external:
            stage.reason, resume = Status.GIVEN.value, None
        else:
            stage.reason, resume = _decide(stage, plan, stage.name in forced, runs)
        stage.spec.resume_from = resume
        runs[stage.name] = stage.reason not in (Status.CACHED, Status.GIVEN)
    return plan


def redecide(plan: Plan, stage: PlannedStage, pending: frozenset[str] = frozenset()) -> bool:
    """Decide `stage` again from its entry as it is now (another run may have trained it, or left a
    checkpoint, since `decide`); `pending`: upstream stages still to run in this invocation.
    A forced stage stays forced. Returns whether it is cached now."""
    if stage.reason != "forced" and not stage.external:
        stage.reason, stage.spec.resume_from = _decide(stage, plan, False, {u: u in pending for u in stage.upstream})
    return stage.cached


def attempt_line(stage: PlannedStage, run_dirs: list[str] | None = None) -> str:
    """What an attempt's first line in stage.log says after `==> <time> `: the log is the store entry's,
    appended by every attempt whichever run_dir (default: those this process holds) started it."""
    by = ", ".join(run_dirs or held_run_dirs()) or "?"
    return f"{stage.name} [{stage.type}] ({stage.reason}), started for run_dir {by}"


def prepare_stage_dir(stage: PlannedStage, log_attempt: bool = True) -> None:
    """Make <stage_dir> ready for a run of `stage` (any launcher): it is not done until the stage
    writes its manifest again; outputs of another attempt are cleared unless this run resumes its
    checkpoint (same fingerprint, `resume_from`), and half-written checkpoints are dropped either way.
    `log_attempt`: open the attempt in stage.log now (a process about to start); a queued job's script
    writes that line itself when the job starts."""
    folder = stage.dir
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.manifest_file.unlink(missing_ok=True)
    folder.progress_file.unlink(missing_ok=True)  # an earlier attempt's: this one is queued until its process starts
    if stage.spec.resume_from:
        complete = {path for _, path in folder.complete_checkpoints()}
        for path in folder.checkpoints.glob("checkpoint-*"):
            if path not in complete:
                shutil.rmtree(path, ignore_errors=True)
    else:
        for name in STAGE_OUTPUTS:
            shutil.rmtree(folder / name, ignore_errors=True)
        folder.history_file.unlink(missing_ok=True)
    write_json(folder / FINGERPRINT_FILE, {"fingerprint": stage.spec.fingerprint,
                                           "inputs": stage.spec.fingerprint_inputs, "prepared_at": time.time()})
    if log_attempt:
        with open(folder / STAGE_LOG, "a") as log:
            log.write(f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} {attempt_line(stage)}\n")

"""A plan's stages in the store: their folders become entries, and the run_dir links to them.

`relocate` (in `decide`, after fingerprinting) points every stage's folder, its outputs and every
path another stage reads from it at `<store>/<type>/<fingerprint>/`, so stage.yaml, job scripts
and manifests name the entry, which never changes meaning. `adopt` moves the stage folders of a
run_dir made before the store into it, under the fingerprint they were trained with. `attach`
links `<run_dir>/<stage>` to the entries the run uses and holds the finished ones shared.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from posttrain.artifacts import FINGERPRINT_FILE, StageDir
from posttrain.jsonio import read_json
from posttrain.pipeline import Plan, PlannedStage
from workflows.state.lock import hold_entry
from workflows.store.layout import Store, touch

ASIDE = ".before-store"  # suffix of a run_dir's old stage folder the store could not take in


class StoreError(Exception):
    """The store cannot be used as planned (an entry vanished meanwhile); the message says what to do."""


def store_of(plan: Plan) -> Store:
    return Store.of(str(plan.config["store_dir"]))


def view_path(plan: Plan, stage: PlannedStage) -> Path:
    """<run_dir>/<stage>: a link to the stage's entry (a real folder in a run_dir from before the store)."""
    return Path(plan.run_dir) / stage.name


def _moved(value: Any, moves: dict[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in moves.items():
            if value == old or value.startswith(old + os.sep):
                return new + value[len(old):]
        return value
    if isinstance(value, list):
        return [_moved(v, moves) for v in value]
    if isinstance(value, dict):
        return {k: _moved(v, moves) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            if f.name != "fingerprint_inputs":  # what the fingerprint was computed from: no paths of its own
                setattr(value, f.name, _moved(getattr(value, f.name), moves))
    return value


def relocate(plan: Plan) -> None:
    """Point each stage's folder, and every path into it, at its entry. Needs `spec.fingerprint`."""
    store = store_of(plan)
    moves = {stage.stage_dir: str(store.entry(stage.type, str(stage.spec.fingerprint)))
             for stage in plan.stages if not stage.external}
    moves = {old: new for old, new in moves.items() if old != new}
    if not moves:
        return
    for stage in plan.stages:
        _moved(stage.spec, moves)
        stage.command = _moved(stage.command, moves)


def recorded_fingerprint(folder: StageDir) -> str | None:
    """The fingerprint a stage folder's latest attempt was made with (fingerprint.json, else its manifest)."""
    record = read_json(folder / FINGERPRINT_FILE) or {}
    manifest = folder.read_manifest()
    return record.get("fingerprint") or (manifest.fingerprint if manifest else None)


def legacy(path: Path) -> bool:
    """A stage folder inside the run_dir itself (made before the store), not a link into it."""
    return path.is_dir() and not path.is_symlink()


def link(view: Path, entry: Path) -> None:
    """Make `view` a relative symlink to `entry`, atomically (a reader sees the old link or the new)."""
    view.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(os.path.realpath(entry), os.path.realpath(view.parent))
    if view.is_symlink() and os.readlink(view) == target:
        return
    tmp = view.with_name(f".{view.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, view)


def adopt(plan: Plan) -> None:
    """Move the stage folders of a run_dir from before the store into the store, each under the
    fingerprint it was made with, and link them: finished stages stay cached, interrupted ones
    resumable. A folder the store cannot take (no fingerprint recorded, or the store holds that
    entry already) is renamed `<stage>.before-store`, with a line saying so."""
    store = store_of(plan)
    for stage in plan.stages:
        view = view_path(plan, stage)
        if stage.external or not legacy(view):
            continue
        folder = StageDir(view)
        fingerprint = recorded_fingerprint(folder)
        manifest = folder.read_manifest()
        kind = manifest.type if manifest and manifest.type != "?" else stage.type
        entry = store.entry(kind, fingerprint) if fingerprint else None
        if entry is not None and not entry.exists():
            entry.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(view), str(entry))  # a rename when both are on one filesystem
            link(view, entry)  # paths recorded inside it (manifests) still resolve
            print(f"store: moved {view} (made before the store) into {entry}", flush=True)
            continue
        aside = view.with_name(view.name + ASIDE)
        os.rename(view, aside)
        why = "the store already holds that stage" if entry is not None else "it records no fingerprint"
        print(f"store: kept {view} as {aside} ({why}); delete it once you no longer need it", flush=True)


def attach(plan: Plan) -> None:
    """Link `<run_dir>/<stage>` to each stage's entry, register the run_dir with the store, and hold
    every cached entry shared until this process exits (gc and a forced re-run elsewhere wait).

    Raises:
        StoreError: a cached entry was removed (`posttrain store gc`) between planning and now.
    """
    store = store_of(plan)
    store.register(plan.run_dir)
    for stage in plan.stages:
        if stage.external:
            continue
        entry = Path(stage.stage_dir)
        entry.mkdir(parents=True, exist_ok=True)
        link(view_path(plan, stage), entry)
        if stage.cached:
            hold_entry(store.lock_file(entry), exclusive=False)
            if stage.dir.read_manifest() is None:
                raise StoreError(f"stage '{stage.name}': its store entry {entry} was removed while this run was "
                                 f"planned (posttrain store gc?); run the same command again")
        touch(store.lock_file(entry))

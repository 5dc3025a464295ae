"""Where things are in the store, and what an entry holds (see workflows/store/__init__.py)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.artifacts import StageDir
from posttrain.jsonio import read_json, write_json

STORE_ENV = "POSTTRAIN_STORE_DIR"  # the default of `store_dir`, for a team's shared store
DEFAULT_STORE = "outputs/store"
LOCKS, RUN_DIRS = ".locks", ".run_dirs"


def default_store() -> str:
    """The store `posttrain store` looks at without an argument (the default of `store_dir`)."""
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def store_problems(store_dir: str, run_dir: str, stages: list[str]) -> list[str]:
    """A store and a run_dir that would overlap: the run_dir's stage links would land among entries."""
    store, run = Path(store_dir).expanduser().resolve(), Path(run_dir).expanduser().resolve()
    if run == store or store in run.parents:
        return [f"run_dir: {run_dir} is inside the stage store ({store}, store_dir); choose a run_dir outside it"]
    if run in store.parents and store.relative_to(run).parts[0] in stages:
        return [f"store_dir: {store_dir} is where run_dir's link for stage '{store.relative_to(run).parts[0]}' "
                f"goes; keep the store beside the run_dirs (default {DEFAULT_STORE})"]
    return []


@dataclass(frozen=True)
class Store:
    root: Path

    @classmethod
    def of(cls, store_dir: str) -> Store:
        return cls(Path(store_dir).expanduser().resolve())

    def entry(self, stage_type: str, fingerprint: str) -> Path:
        return self.root / stage_type / fingerprint

    def lock_file(self, entry: Path) -> Path:
        return self.root / LOCKS / f"{entry.parent.name}-{entry.name}.lock"

    def entries(self) -> Iterator[Path]:
        """Every entry folder, by type then fingerprint."""
        if not self.root.is_dir():
            return
        for kind in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            yield from sorted(p for p in kind.iterdir() if p.is_dir() and not p.name.startswith("."))

    def contains(self, path: Path) -> bool:
        return self.root in path.parents and not path.relative_to(self.root).parts[0].startswith(".")

    # ------------------------------------------------------------ the run_dirs that link here

    def _record(self, run_dir: str) -> Path:
        return self.root / RUN_DIRS / f"{hashlib.sha256(run_dir.encode()).hexdigest()[:16]}.json"

    def register(self, run_dir: str) -> None:
        path = self._record(run_dir)
        if (read_json(path) or {}).get("run_dir") != run_dir:
            write_json(path, {"run_dir": run_dir, "registered_at": time.time()})

    def run_dirs(self) -> list[str]:
        folder = self.root / RUN_DIRS
        found = [(read_json(p) or {}).get("run_dir") for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
        return sorted(r for r in found if r)

    def forget(self, run_dir: str) -> None:
        self._record(run_dir).unlink(missing_ok=True)

    def references(self) -> dict[Path, list[tuple[str, str]]]:
        """entry -> [(run_dir, stage)] of every registered run_dir's link into the store."""
        out: dict[Path, list[tuple[str, str]]] = {}
        for run_dir in self.run_dirs():
            for stage, entry in views(Path(run_dir)).items():
                if self.contains(entry):
                    out.setdefault(entry, []).append((run_dir, stage))
        return out


def views(run_dir: Path) -> dict[str, Path]:
    """{stage: the entry it links to} of a run_dir's stage links."""
    out = {}
    if run_dir.is_dir():
        for link in sorted(run_dir.iterdir()):
            if link.is_symlink():
                out[link.name] = Path(os.path.realpath(link))
    return out


def touch(path: Path) -> None:
    """Note that a run used an entry now: its lock file's mtime (the entry itself stays untouched,
    so a cached re-run changes no file of it). `posttrain store ls` shows it; gc's --unused-days reads it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path)
    except OSError:
        pass  # a read-only store is still usable


@dataclass
class EntryInfo:
    """What `posttrain store ls` shows of an entry."""

    path: Path
    type: str
    fingerprint: str
    status: str  # done | incomplete (resumable: checkpoints) | empty
    names: list[str]  # the stage names it was trained or linked as
    size_bytes: int
    last_used: float  # seconds since the epoch; 0 if never recorded
    references: list[tuple[str, str]] = field(default_factory=list)  # (run_dir, stage)
    busy: bool = False  # a run holds its lock (training, or using it)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "fingerprint": self.fingerprint, "path": str(self.path), "status": self.status,
                "stages": self.names, "size_bytes": self.size_bytes, "last_used": self.last_used,
                "run_dirs": [{"run_dir": r, "stage": s} for r, s in self.references], "busy": self.busy}


def size_of(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def describe(entry: Path, lock: Path, references: list[tuple[str, str]], busy: bool) -> EntryInfo:
    folder = StageDir(entry)
    manifest = folder.read_manifest()
    done = manifest is not None and manifest.fingerprint == entry.name
    if done:
        status = "done"
    elif folder.complete_checkpoints():
        status = "incomplete (resumable)"
    else:
        status = "incomplete"
    names = sorted({s for _, s in references} | ({manifest.name} if manifest else set()))
    last = lock.stat().st_mtime if lock.exists() else (manifest.finished_at if manifest else 0.0)
    return EntryInfo(entry, entry.parent.name, entry.name, status, names, size_of(entry), last, references, busy)

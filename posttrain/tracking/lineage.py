"""What a run came from, as strings to tag it with: the project's commit, posttrain's version, and
the identity (path + content digest) of every data source of a stage. No mlflow import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version

from posttrain.paths import ROOT
from posttrain.spec import Source, StageSpec


def git_commit() -> str | None:
    """The project's commit (`<sha>-dirty` with uncommitted changes), or None outside a checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def posttrain_version() -> str:
    try:
        return version("posttrain")
    except PackageNotFoundError:
        return "unknown"


def data_identities(spec: StageSpec) -> list[dict[str, str]]:
    """One entry per data source: group (sources/eval_sources), index, path and a content digest.

    The digest comes from the fingerprint record (workflows/state/fingerprint.py) when the plan has
    one: `sha256:<hex>` for a file, `dir:<hex>` for a folder, `stage:<name>/dataset` for an upstream's
    output. Without it, a file's sha256 is computed here; hub datasets are named by id and revision.
    """
    if spec.data is None:
        return []
    recorded = (spec.fingerprint_inputs or {}).get("data") or {}
    out = []
    for group in ("sources", "eval_sources"):
        for i, source in enumerate(getattr(spec.data, group)):
            path = source.path or ""
            digest = None
            with contextlib.suppress(IndexError, KeyError, TypeError, AttributeError):
                digest = recorded[group][i]["path"]
            if not isinstance(digest, str) or digest == path:
                digest = _identity(path, source)
            out.append({"group": group, "index": str(i), "path": path, "digest": digest, "stage": source.stage or ""})
    return out


def _identity(path: str, source: Source) -> str:
    if source.stage:
        return f"stage:{source.stage}/dataset"
    if os.path.isfile(path):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(8 << 20):
                digest.update(block)
        return f"sha256:{digest.hexdigest()}"
    if os.path.isdir(path):
        return "dir:" + path
    return f"hub:{path}@{source.revision or 'main'}"

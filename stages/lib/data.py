"""Load a stage's data: the one preparation pipeline (posttrain/data/prepare.py) over every row of
every source, then the trainer's rows as file-backed `datasets.Dataset`s.

The checks, conversions and mixture arithmetic are the planner's own, so the stage keeps exactly
the rows the plan promised. Local files are read with the same stdlib readers the planner uses
(same row numbers); folders and hub dataset ids go through `datasets.load_dataset(path, name,
split=..., revision=...)`, the hub's own code path (a local folder is resolved like a hub repo).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.data.check import Settings, SourceCheck, check_source, display_path
from posttrain.data.files import SourceError, dataset_fingerprint, iter_rows
from posttrain.data.prepare import prepare, trainer_rows
from posttrain.data.tokens import TokenCounter
from posttrain.hashing import cache_root
from posttrain.registry import STAGE_TYPES
from posttrain.spec import Source, StageSpec
from stages.lib.common import log


@dataclass
class StageData:
    train: Any  # datasets.Dataset in the trainer's columns
    evaluation: Any | None
    conversational: bool  # rows go through the chat template
    metrics: dict[str, float] = field(default_factory=dict)  # data/* counts for the manifest and the tracker
    fingerprints: dict[str, str] = field(default_factory=dict)  # source path -> content sha256 (lineage)
    notes: list[str] = field(default_factory=list)  # what was dropped or will be truncated
    last_turn: bool = False  # conversations became prompt/completion pairs of their last assistant turn


def load_source(source: Source) -> Any:
    """A folder, a hub dataset id or an upstream stage's saved dataset as a `datasets.Dataset`."""
    import datasets

    path = Path(source.path or "").expanduser()
    split = source.split or "train"
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():  # Dataset.save_to_disk
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(str(source.path), source.name, split=split, revision=source.revision)


def _read(source: Source, fmt: str, settings: Settings, counter: TokenCounter | None) -> list[SourceCheck]:
    """Every row of a source, checked and kept: local files with the planner's readers (same row
    numbers), folders and hub ids through `datasets`."""
    path = Path(source.path or "").expanduser()
    if path.is_file():
        return [check_source(iter_rows(path), display_path(path), fmt, settings, counter, keep=True)]
    label = f"{display_path(path) if path.exists() else source.path} (split {source.split or 'train'})"
    return [check_source(enumerate(load_source(source), 1), label, fmt, settings, counter, keep=True)]


def _fail(spec: StageSpec, problems: list[str]) -> SystemExit:
    n = len(problems)
    lines = "\n".join(f"  - {p}" for p in problems)
    return SystemExit(f"[{spec.name}] data is not valid, found {n} problem{'s' * (n != 1)}:\n{lines}")


def load_stage_data(spec: StageSpec) -> StageData:
    """The stage's training and eval datasets, checked, converted and mixed as the plan said.

    Raises:
        SystemExit: with every problem (file and row) when `on_invalid: error` and a row is invalid.
    """
    assert spec.data is not None
    stage_type = STAGE_TYPES[spec.type]
    settings = Settings.from_spec(spec, stage_type.trl_config, stage_type.shapes)
    counter = TokenCounter.from_dir(spec.tokenizer, spec.chat_template) if spec.tokenizer else None
    prepared = prepare(spec, stage_type.formats, settings, counter, _read)
    if prepared.problems:
        raise _fail(spec, prepared.problems)
    try:
        rows = trainer_rows(prepared, spec.data)
        fingerprints = {str(s.path): dataset_fingerprint(s) for s in (*spec.data.sources, *spec.data.eval_sources)}
    except (ValueError, SourceError, OSError) as err:
        raise _fail(spec, [str(err)]) from None
    for note in prepared.notes:
        log(spec, note)
    return StageData(materialize(rows.train), materialize(rows.evaluation) if rows.evaluation else None,
                     rows.conversational, rows.metrics, fingerprints, prepared.notes, prepared.settings.last_turn)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No `Saving the dataset` progress bar: it is an implementation detail here."""
    from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    was = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if was:
            enable_progress_bars()


def materialize(rows: list[dict[str, Any]]) -> Any:
    """`rows` as a `datasets.Dataset` backed by a file named by their content.

    In memory, every run would tokenize the rows again; from a file, the trainer's tokenization
    (its `.map`) is cached beside it by `datasets`, so a re-run with the same rows, tokenizer and
    settings (another beta, a resumed stage, a second stage on the same data) skips it, as it
    would for a plain `load_dataset` script. Entries: <cache root>/datasets/<sha256>/ (cache root:
    $POSTTRAIN_CACHE_DIR, default ~/.cache/posttrain); delete the folder to reclaim space. Where
    the cache cannot be written, the rows stay in memory.
    """
    from datasets import Dataset, load_from_disk

    key = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    entry = cache_root() / "datasets" / key
    if not entry.is_dir():
        try:
            store_dataset(Dataset.from_list(rows), entry)
        except OSError:  # a read-only or broken cache
            return Dataset.from_list(rows)
    return load_from_disk(str(entry))


def store_dataset(dataset: Any, entry: Path, files: dict[str, str] | None = None) -> None:
    """Save `dataset` (plus `files`: name -> text) next to `entry`, then rename it in: readers see
    all of it or nothing. When another process stored the same entry first, theirs is kept.

    Raises:
        OSError: the cache folder cannot be written.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _quiet():
            dataset.save_to_disk(str(tmp))
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not entry.is_dir():
            raise

"""Load a stage's data: read every source, drop (or refuse) the rows the planner's checks refuse,
convert them to the columns the TRL trainer takes, mix them by weight, split off the eval rows.

The checks, conversions and mixture arithmetic are the planner's own pure functions
(workflows/data_check.py, data_formats.py, data_mix.py), so the stage keeps exactly the rows the
plan promised. Local files are read with the same stdlib readers the planner uses (same row
numbers); folders and hub dataset ids go through `datasets.load_dataset(path, name, split=...,
revision=...)`, the hub's own code path (a local folder is resolved like a hub repo).
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

from stages.common import log
from workflows.data_check import SourceCheck, Settings, check_source, cross_source_duplicates, describe, \
    display_path
from workflows.data_files import SourceError, dataset_fingerprint, iter_rows
from workflows.data_formats import sft_common_shape, to_common_shape
from workflows.data_mix import plan_mixture
from workflows.hashing import cache_root
from workflows.token_lengths import TokenCounter


@dataclass
class StageData:
    train: Any  # datasets.Dataset in the trainer's columns
    evaluation: Any | None
    conversational: bool  # rows go through the chat template
    metrics: dict[str, float] = field(default_factory=dict)  # data/* counts for the manifest and MLflow
    fingerprints: dict[str, str] = field(default_factory=dict)  # source path -> content sha256 (lineage)
    notes: list[str] = field(default_factory=list)  # what was dropped or will be truncated


def load_source(source: dict[str, Any]) -> Any:
    """A folder, a hub dataset id or an upstream stage's saved dataset as a `datasets.Dataset`."""
    import datasets

    path = Path(source["path"]).expanduser()
    split = source.get("split") or "train"
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():  # Dataset.save_to_disk
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(str(source["path"]), source.get("name"), split=split,
                                 revision=source.get("revision"))


def _check(source: dict[str, Any], fmt: str, settings: Settings, counter: TokenCounter | None) -> SourceCheck:
    path = Path(source["path"]).expanduser()
    if path.is_file():
        return check_source(iter_rows(path), display_path(path), fmt, settings, counter, keep=True)
    label = f"{display_path(path) if path.exists() else source['path']} (split {source.get('split') or 'train'})"
    return check_source(enumerate(load_source(source), 1), label, fmt, settings, counter, keep=True)


def _group(data: dict[str, Any], group: str, settings: Settings, counter: TokenCounter | None) -> list[SourceCheck]:
    return [_check(s, s.get("format") or data["format"], settings, counter) for s in data.get(group) or []]


def _fail(spec: dict[str, Any], problems: list[str]) -> SystemExit:
    n = len(problems)
    lines = "\n".join(f"  - {p}" for p in problems)
    return SystemExit(f"[{spec['name']}] data is not valid, found {n} problem{'s' * (n != 1)}:\n{lines}")


def load_stage_data(spec: dict[str, Any]) -> StageData:
    """The stage's training and eval datasets, checked, converted and mixed as the plan said.

    Raises:
        SystemExit: with every problem (file and row) when `on_invalid: error` and a row is invalid.
    """
    data = spec["data"]
    settings = Settings.from_spec(spec)
    counter = TokenCounter.from_dir(spec["tokenizer"], spec.get("chat_template")) if spec.get("tokenizer") else None
    try:
        train = _group(data, "sources", settings, counter)
        evaluation = _group(data, "eval_sources", settings, counter)
        fingerprints = {str(s["path"]): dataset_fingerprint(s)
                        for s in (data.get("sources") or []) + (data.get("eval_sources") or [])}
    except (SourceError, OSError) as err:
        raise _fail(spec, [str(err)]) from None
    cross_source_duplicates(evaluation, training=cross_source_duplicates(train))
    checks = train + evaluation
    drop = data.get("on_invalid") == "drop"
    lines = [line for check in checks for line in describe(check)]
    if lines and not drop:
        raise _fail(spec, [f"{line}; fix the rows or set on_invalid: drop" for line in lines])
    if not any(number not in c.bad for c in train for number, _ in c.kept):
        raise _fail(spec, ["no valid training rows"] + lines)
    kinds = {(c.shape, c.conversational) for c in checks if c.conversational is not None}
    common = sft_common_shape(kinds) if spec["type"] == "sft" else next(iter(kinds))
    if common is None or (spec["type"] != "sft" and len({k for _, k in kinds}) > 1):
        raise _fail(spec, ["sources mix conversations with plain strings; TRL tokenizes a dataset one way"])

    def rows(check: SourceCheck) -> list[list[dict[str, Any]]]:
        return [trainer_rows for number, trainer_rows in check.kept if number not in check.bad]

    def flatten(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [to_common_shape(r, common) if spec["type"] == "sft" else r for group in groups for r in group]

    train_rows = [rows(c) for c in train]
    sources = data["sources"]
    fraction = 0.0 if data.get("eval_sources") else data.get("eval_fraction") or 0.0
    mixture = plan_mixture([len(r) for r in train_rows], [s.get("weight") for s in sources],
                           [s.get("max_rows") for s in sources], data["seed"], data.get("shuffle", True), fraction)
    train_list = flatten([train_rows[i][j] for i, j in mixture.train])
    eval_list = flatten([train_rows[i][j] for i, j in mixture.evaluation])
    if evaluation:
        eval_rows = [rows(c) for c in evaluation]
        capped = plan_mixture([len(r) for r in eval_rows], [None] * len(eval_rows),
                              [s.get("max_rows") for s in data["eval_sources"]], data["seed"], shuffle=False)
        eval_list += flatten([eval_rows[i][j] for i, j in capped.train])
    invalid = sum(len(c.bad) for c in checks)
    over = sum(c.over_length for c in checks)
    notes = [f"dropping {line}" for line in lines]
    if over:
        notes.append(f"{over} rows are longer than max_length={settings.max_length}: {settings.truncation()}")
    metrics = {"data/rows": float(len(train_list)), "data/eval_rows": float(len(eval_list)),
               "data/invalid_rows": float(invalid), "data/dropped_rows": float(invalid if drop else 0),
               "data/over_length_rows": float(over), "data/sources": float(len(sources))}
    for note in notes:
        log(spec, note)
    return StageData(materialize(train_list), materialize(eval_list) if eval_list else None,
                     bool(common and common[1]), metrics, fingerprints, notes)


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


def load_datasets(data: dict[str, Any], target_format: str | None = None) -> tuple[Any, Any]:
    """(train, eval-or-None) of a `data` spec without a stage around it (no length checks).

    `target_format` picks the trainer: `preference` (DPO), `unpaired_preference` (KTO), else SFT.
    """
    stage_type = {"preference": "dpo", "unpaired_preference": "kto"}.get(target_format or "", "sft")
    loaded = load_stage_data({"name": "data", "type": stage_type, "data": data, "trainer": {}})
    return loaded.train, loaded.evaluation

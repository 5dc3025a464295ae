"""The one data-preparation pipeline of a training stage, run by the planner and by the stage.

    settings checks -> every source's rows checked (`read`) -> duplicates across sources and against
    the training rows -> problems (on_invalid: error) or drop notes -> conversations vs plain strings
    -> the mixture -> the trainer's rows

The planner (workflows/planning/data.py) reads what it can before any compute (local files,
cached and bounded) and reports problems and notes; the stage process (stages/lib/data.py) reads
every source, hub datasets and upstream outputs included, and takes the rows. Both call `prepare`
with their own reader, so the stage keeps exactly the rows the plan promised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from posttrain.data.check import Settings, SourceCheck, cross_source_duplicates, describe, display_path, \
    kind_problems, last_turn_loss
from posttrain.data.files import SourceError
from posttrain.data.formats import FORMATS, sft_common_shape, to_common_shape
from posttrain.data.mix import Mixture, plan_mixture
from posttrain.data.tokens import TokenCounter
from posttrain.spec import DataSpec, Source, StageSpec

ON_INVALID = ("error", "drop")
# A reader checks one source's rows as `format`: one SourceCheck per file, or None for a source
# that is missing (the planner reports missing paths itself).
# Raises: Deferred, SourceError, OSError.
Reader = Callable[[Source, str, Settings, "TokenCounter | None"], "list[SourceCheck] | None"]


class Deferred(Exception):
    """A source that cannot be read yet (a hub dataset at plan time, an upstream's output); the
    message says when it is checked."""


@dataclass
class Prepared:
    """What `prepare` found; `train`/`evaluation` hold one entry per source (None: not read)."""

    settings: Settings
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    train: list[list[SourceCheck] | None] = field(default_factory=list)
    evaluation: list[list[SourceCheck] | None] = field(default_factory=list)
    mixture: Mixture | None = None  # when every training source was read

    @property
    def checks(self) -> list[SourceCheck]:
        return [c for group in (*self.train, *self.evaluation) if group for c in group]


def config_problems(name: str, data: DataSpec, accepted: tuple[str, ...], stage_type: str) -> list[str]:
    """Settings of `data` that cannot work, before any row is read."""
    prefix = f"stages.{name}.data"
    problems = []
    if data.on_invalid not in ON_INVALID:
        problems.append(f"{prefix}.on_invalid: '{data.on_invalid}' is not one of {', '.join(ON_INVALID)}")
    if not 0 <= (data.eval_fraction or 0) < 1:
        problems.append(f"{prefix}.eval_fraction: {data.eval_fraction} is not in [0, 1)")
    for group in ("sources", "eval_sources"):
        for i, source in enumerate(getattr(data, group)):
            if source.format is not None and source.format not in accepted:
                problems.append(f"{prefix}.{group}[{i}].format: a {stage_type} stage takes "
                                f"{' or '.join(accepted)} data, not '{source.format}'")
            if source.weight is not None and not 0 <= source.weight < math.inf:
                problems.append(f"{prefix}.{group}[{i}].weight: {source.weight} is not a finite share of 0 or more")
            if source.max_rows is not None and source.max_rows < 1:
                problems.append(f"{prefix}.{group}[{i}].max_rows: {source.max_rows} is not a positive count")
    weights = [s.weight for s in data.sources]
    if data.sources and any(w is not None for w in weights) and sum(1.0 if w is None else w for w in weights) == 0:
        problems.append(f"{prefix}.sources: every weight is 0, so the mixture has no rows; give at least one "
                        f"source a weight above 0 (or remove the weights)")
    return problems


def prepare(spec: StageSpec, accepted: tuple[str, ...], settings: Settings, counter: TokenCounter | None,
            read: Reader, notes: list[str] | None = None) -> Prepared:
    """Check every source of `spec.data` with `read`; problems, notes (after `notes`, once the
    settings are fine) and the planned mixture."""
    data = spec.data
    assert data is not None
    prefix = f"stages.{spec.name}.data"
    out = Prepared(settings, config_problems(spec.name, data, accepted, spec.type))
    formats = {data.format} | {s.format for s in (*data.sources, *data.eval_sources)}
    if out.problems or data.format not in accepted or not formats - {None} <= set(FORMATS):
        return out  # a wrong format makes every row look broken: report the config first
    out.notes.extend(notes or [])
    settings.last_turn = last_turn_loss(settings, counter)
    if settings.last_turn:
        out.notes.append("the chat template has no {% generation %} markers: the loss covers each conversation's "
                         "last assistant turn (trained as prompt/completion); earlier assistant turns are context")
    for group, target in (("sources", out.train), ("eval_sources", out.evaluation)):
        for i, source in enumerate(getattr(data, group)):
            where = f"{prefix}.{group}[{i}]"
            found = None
            try:
                found = read(source, source.format or data.format, settings, counter)
            except Deferred as note:
                out.notes.append(f"{where}: {note}")
            except SourceError as err:
                out.problems.append(f"{where}: {err}")
            except OSError as err:
                out.problems.append(f"{where}: cannot read {err.filename or source.path}: {err.strerror}")
            target.append(found)
    flat_train = [c for group in out.train if group for c in group]
    flat_eval = [c for group in out.evaluation if group for c in group]
    cross_source_duplicates(flat_eval, training=cross_source_duplicates(flat_train))

    drop = data.on_invalid == "drop"
    hint = "" if drop else f"; fix the rows or set {prefix}.on_invalid=drop to skip them"
    checks = out.checks
    for check in checks:
        lines = describe(check, hint)
        if drop:
            out.notes.extend(f"dropping {line}" for line in lines)
        else:
            out.problems.extend(f"{prefix}: {line}" for line in lines)
    out.problems.extend(kind_problems(prefix, settings, checks, counter))
    for check in checks:
        if check.rows and not check.valid and drop:
            out.problems.append(f"{prefix}: {check.label}: none of its {check.rows} rows is valid")
        elif not check.rows:
            out.problems.append(f"{prefix}: {check.label}: has no rows")
    _length_note(out, checks)
    invalid = sum(len(c.bad) for c in checks)
    if drop and invalid:
        out.notes.insert(0, f"dropping {invalid:,} invalid rows (on_invalid: drop)")
    if out.train and all(out.train) and not out.problems:
        out.mixture = _mixture(data, [sum(c.valid for c in group) for group in out.train if group])
        if not out.mixture.train:
            out.problems.append(f"{prefix}.sources: the mixture has no training rows (the sources with a weight "
                                f"above 0 have no valid rows)")
        _mixture_notes(out, data)
        _eval_note(out, spec)
    return out


def _length_note(out: Prepared, checks: list[SourceCheck]) -> None:
    checked = sum(c.length_checked for c in checks)
    over = sum(c.over_length for c in checks)
    valid = sum(c.valid for c in checks)
    if not over:
        return
    over_rows = round(over * valid / checked) if checked else 0
    longest = max((c.longest + (c.label,) for c in checks if c.longest), key=lambda x: x[0])
    estimate = "" if checked == valid else f" (estimated from a sample of {checked:,})"
    out.notes.append(f"{over_rows:,} of {valid:,} rows ({100 * over_rows / valid:.1f}%) are longer than "
                     f"max_length={out.settings.max_length} tokens{estimate}, longest {longest[0]} ({longest[2]} row "
                     f"{longest[1]}): {out.settings.truncation()}")


def _mixture(data: DataSpec, sizes: list[int]) -> Mixture:
    fraction = 0.0 if data.eval_sources else data.eval_fraction or 0.0
    return plan_mixture(sizes, [s.weight for s in data.sources], [s.max_rows for s in data.sources], data.seed,
                        data.shuffle, fraction)


def _mixture_notes(out: Prepared, data: DataSpec) -> None:
    mixture = out.mixture
    assert mixture is not None
    if any(s.weight is not None or s.max_rows is not None for s in data.sources):
        parts = [f"{display_path(s.path or '')} {n:,} ({100 * n / max(1, sum(mixture.counts)):.0f}%)"
                 for s, n in zip(data.sources, mixture.counts)]
        out.notes.append(f"mixture of {sum(mixture.counts):,} rows: {', '.join(parts)}")
    if mixture.evaluation:
        out.notes.append(f"eval: {len(mixture.evaluation):,} rows held out (eval_fraction {data.eval_fraction})")


def _eval_note(out: Prepared, spec: StageSpec) -> None:
    """What in-training evaluation will cost: how many rows, how often (eval_sources, capped by max_rows)."""
    data = spec.data
    if not data or not data.eval_sources or not out.evaluation or not all(out.evaluation):
        return
    sizes = [sum(c.valid for c in group) for group in out.evaluation if group]
    rows = sum(min(n, s.max_rows or n) for n, s in zip(sizes, data.eval_sources))
    steps = spec.trainer.get("eval_steps") if spec.trainer.get("eval_strategy") == "steps" else None
    out.notes.append(f"eval: {rows:,} rows from eval_sources, evaluated {f'every {steps} steps and ' if steps else ''}"
                     "at the end of training")


@dataclass
class TrainerRows:
    """The rows a trainer gets, after checks, conversion and the mixture."""

    train: list[dict[str, Any]]
    evaluation: list[dict[str, Any]]
    conversational: bool  # they go through the chat template
    metrics: dict[str, float]  # data/* counts for the manifest and the tracker


def trainer_rows(prepared: Prepared, data: DataSpec) -> TrainerRows:
    """The rows of a preparation whose sources were all read with `keep=True` and had no problem.

    Raises:
        ValueError: with the reason when no row can be trained on.
    """
    checks = prepared.checks
    if not any(number not in c.bad for group in prepared.train if group for c in group for number, _ in c.kept):
        raise ValueError("no valid training rows")
    kinds = {(c.shape, c.conversational) for c in checks if c.conversational is not None}
    sft = prepared.settings.sft
    common = sft_common_shape(kinds) if sft else next(iter(kinds))
    if sft and prepared.settings.last_turn and common and common[1]:
        common = ("prompt_completion", True)

    def rows(check: SourceCheck) -> list[list[dict[str, Any]]]:
        return [converted for number, converted in check.kept if number not in check.bad]

    def flatten(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [to_common_shape(r, common) if sft else r for group in groups for r in group]

    per_source = [[r for c in group for r in rows(c)] for group in prepared.train if group]
    mixture = prepared.mixture or _mixture(data, [len(r) for r in per_source])
    train = flatten([per_source[i][j] for i, j in mixture.train])
    evaluation = flatten([per_source[i][j] for i, j in mixture.evaluation])
    if prepared.evaluation:
        eval_rows = [[r for c in group for r in rows(c)] for group in prepared.evaluation if group]
        capped = plan_mixture([len(r) for r in eval_rows], [None] * len(eval_rows),
                              [s.max_rows for s in data.eval_sources], data.seed, shuffle=False)
        evaluation += flatten([eval_rows[i][j] for i, j in capped.train])
    invalid = sum(len(c.bad) for c in checks)
    metrics = {"data/rows": float(len(train)), "data/eval_rows": float(len(evaluation)),
               "data/invalid_rows": float(invalid),
               "data/dropped_rows": float(invalid if data.on_invalid == "drop" else 0),
               "data/over_length_rows": float(sum(c.over_length for c in checks)),
               "data/sources": float(len(data.sources))}
    return TrainerRows(train, evaluation, bool(common and common[1]), metrics)

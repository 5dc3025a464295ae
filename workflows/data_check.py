"""Validate every stage's data before any compute; the stage process keeps exactly the rows it passes.

Checks, per row (`check_source`): unparseable rows (bad JSON, ragged CSV), missing or wrong-typed
columns (with a guess of the format the row looks like), empty prompt/response/turns, unknown
roles and conversations without an assistant turn, `chosen == rejected`, implicit-prompt pairs
with no shared prefix, KTO labels that are not booleans, a source mixing conversations and plain
strings, exact duplicates (after conversion: an alpaca row equal to a messages row counts; across
the sources of a stage; an eval row equal to a training row), a chat template that refuses the
row, and, with the policy's tokenizer, rows whose prompt alone fills `max_length` (the trainer
would silently drop them). Rows longer than `max_length` are counted, and the plan says what
truncation will cut. Per stage: source formats the stage takes, mixing conversations with
plain strings, conversational data without a chat template, empty sources, weights, eval fraction.

`on_invalid: error` stops the plan with every problem (file and 1-based row); `drop` drops those
rows, and the counts go to the plan, the stage's manifest metrics (`data/*`) and the summary.

Speed (planner): every row is parsed and checked in one streaming pass in pure Python, up to
PLAN_SCAN_ROWS rows per source; token lengths are measured on a seeded sample of
PLAN_LENGTH_SAMPLE valid rows per source (all rows below that), batched through `tokenizers`.
Results are cached per (file content, format, tokenizer, settings) in $POSTTRAIN_CACHE_DIR
(default ~/.cache/posttrain), so re-planning an unchanged pipeline re-reads nothing. The stage
checks every row of every source again with the same functions before it trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.data_files import BadRow, SourceError, dataset_fingerprint, is_hub_id, iter_rows, save_file_hashes, \
    source_files
from workflows.data_formats import FORMATS, check_row, is_conversational, sft_common_shape, target_shape, \
    to_trainer_rows
from workflows.hashing import cache_root
from workflows.token_lengths import TokenCounter, has_generation_markers

PLAN_SCAN_ROWS = 1_000_000  # rows per source the planner reads; the stage reads them all
PLAN_LENGTH_SAMPLE = 10_000  # rows per source whose tokens the planner counts (~1 s with a BPE tokenizer)
TRL_MAX_LENGTH = 1024  # SFTConfig / DPOConfig / KTOConfig `max_length` default
SHOW_ROWS = 5  # row numbers listed per problem
SHOW_REASONS = 8  # problem lines per source before "... and N more"
TRAINERS = {"sft": "SFTTrainer", "dpo": "DPOTrainer", "kto": "KTOTrainer"}


@dataclass
class Settings:
    """What a stage's trainer does with lengths and loss masks (from its `trainer` keys)."""

    stage: str
    stage_type: str
    seed: int = 0
    max_length: int | None = TRL_MAX_LENGTH
    truncation_mode: str = "keep_start"
    assistant_only_loss: bool = False
    completion_only_loss: bool | None = None  # None = TRL's default: on for prompt/completion rows
    packing: bool = False

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Settings:
        trainer = spec.get("trainer") or {}
        return cls(spec["name"], spec["type"], (spec.get("data") or {}).get("seed") or 0,
                   trainer.get("max_length", TRL_MAX_LENGTH), trainer.get("truncation_mode", "keep_start"),
                   bool(trainer.get("assistant_only_loss", False)), trainer.get("completion_only_loss"),
                   bool(trainer.get("packing", False)))

    def loss_start(self, row: dict[str, Any], prompt_tokens: int) -> int:
        """Where the first token that carries loss may start: the trainer drops a row truncated before it."""
        if "text" in row or (self.stage_type == "sft" and "messages" in row and not self.assistant_only_loss):
            return 0
        if self.stage_type == "sft" and "completion" in row and self.completion_only_loss is False:
            return 0
        if self.stage_type in ("sft", "dpo") and self.truncation_mode == "keep_end":
            return 0  # the end (the response) is kept
        return prompt_tokens

    def truncation(self) -> str:
        trainer = TRAINERS.get(self.stage_type, "the trainer")
        if self.truncation_mode == "keep_end" and self.stage_type in ("sft", "dpo"):
            return f"{trainer} keeps their last {self.max_length} tokens, cutting the start of the prompt"
        what = {"dpo": "prompt+chosen and prompt+rejected", "kto": "prompt+completion"}.get(self.stage_type, "them")
        return (f"{trainer} truncates {what} to the first {self.max_length} tokens, so the end of the response "
                "(and its end-of-turn token) is never trained on")


@dataclass
class SourceCheck:
    """What one source's rows gave: problems by reason, valid rows' hashes, length counts."""

    label: str
    fmt: str
    shape: str
    rows: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)  # reason -> row numbers (as shown)
    bad: set[int] = field(default_factory=set)
    hashes: list[tuple[int, str]] = field(default_factory=list)  # (row, content hash) of valid rows
    conversational: bool | None = None
    length_checked: int = 0
    over_length: int = 0
    longest: tuple[int, int] | None = None  # (tokens, row)
    scan_stopped: bool = False
    kept: list[tuple[int, list[dict[str, Any]]]] = field(default_factory=list)  # stage only: (row, trainer rows)

    def add(self, row: int, reason: str, shown: str | None = None) -> None:
        self.problems.setdefault(reason, []).append(shown or str(row))
        self.bad.add(row)

    @property
    def valid(self) -> int:
        return self.rows - len(self.bad)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("kept", "bad")}
        return {**out, "bad": sorted(self.bad)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceCheck:
        data = dict(data, bad=set(data["bad"]), hashes=[tuple(h) for h in data["hashes"]])
        if data["longest"]:
            data["longest"] = tuple(data["longest"])
        return cls(**data)


def row_hash(trainer_rows: list[dict[str, Any]]) -> str:
    """Content hash of converted rows (so an alpaca row equal to a messages row matches). repr, not
    sorted JSON: 4x faster, and converted rows have a fixed key order."""
    return hashlib.blake2b(repr(trainer_rows).encode(), digest_size=12).hexdigest()


def check_source(rows: Iterable[tuple[int, Any]], label: str, fmt: str, settings: Settings,
                 counter: TokenCounter | None, *, keep: bool = False, scan_limit: int | None = None,
                 length_sample: int | None = None) -> SourceCheck:
    """Check one source's rows (numbered as the user sees them); `keep` holds the converted valid rows."""
    result = SourceCheck(label, fmt, target_shape(settings.stage_type, fmt))
    first_of_hash: dict[str, int] = {}
    sample: list[tuple[int, list[dict[str, Any]]]] = []
    rng = random.Random(f"{settings.seed}:{label}")
    valid = 0
    for number, row in rows:
        if scan_limit is not None and result.rows >= scan_limit:
            result.scan_stopped = True
            break
        result.rows += 1
        if isinstance(row, BadRow):
            result.add(number, row.reason)
            continue
        reasons = check_row(row, fmt)
        for reason in reasons:
            result.add(number, reason)
        if reasons:
            continue
        trainer_rows = to_trainer_rows(row, fmt, result.shape)
        conversational = is_conversational(trainer_rows[0])
        if result.conversational is None:
            result.conversational = conversational
        elif conversational != result.conversational:
            kinds = ("plain text", "a conversation") if conversational else ("a conversation", "plain text")
            result.add(number, f"{kinds[1]}, but the source's first row is {kinds[0]} "
                               "(TRL tokenizes a dataset one way); keep one kind per source")
            continue
        key = row_hash(trainer_rows)
        if key in first_of_hash:
            result.add(number, "exact duplicate of an earlier row", f"{number} (= row {first_of_hash[key]})")
            continue
        first_of_hash[key] = number
        result.hashes.append((number, key))
        item = (number, trainer_rows)
        if keep:
            result.kept.append(item)
        valid += 1
        if length_sample is None or len(sample) < length_sample:
            sample.append(item)
        elif (j := rng.randrange(valid)) < length_sample:  # reservoir sampling: uniform over the source
            sample[j] = item
    if counter is not None and settings.max_length is not None and not settings.packing and sample:
        _check_lengths(result, sorted(sample, key=lambda item: item[0]), settings, counter)
    return result


def _check_lengths(result: SourceCheck, sample: list[tuple[int, list[dict[str, Any]]]], settings: Settings,
                   counter: TokenCounter) -> None:
    limit = settings.max_length
    lengths = iter(counter.lengths([r for _, trainer_rows in sample for r in trainer_rows]))
    trainer = TRAINERS.get(settings.stage_type, "the trainer")
    for number, trainer_rows in sample:
        measured = [(row, next(lengths)) for row in trainer_rows]
        refused = next((m for _, m in measured if isinstance(m, str)), None)
        if refused:
            result.add(number, refused)
            continue
        longest = max(full for _, (_, full) in measured)
        if any(settings.loss_start(row, prompt) >= limit for row, (prompt, _) in measured):
            prompt = max(prompt for _, (prompt, _) in measured)
            result.add(number, f"the prompt alone fills max_length={limit} tokens: {trainer} would drop the row "
                               "silently (no response token left); raise max_length or shorten the prompt",
                       f"{number} ({prompt} tokens)")
            continue
        result.length_checked += 1
        if longest > limit:
            result.over_length += 1
            if result.longest is None or longest > result.longest[0]:
                result.longest = (longest, number)


def cross_source_duplicates(checks: list[SourceCheck], training: dict[str, tuple[str, int]] | None = None
                            ) -> dict[str, tuple[str, int]]:
    """Mark rows repeated from an earlier source (or, for eval sources, from the training data).

    Returns the first (label, row) of every valid row's hash, to check eval sources against.
    """
    seen: dict[str, tuple[str, int]] = {}
    for check in checks:
        for number, key in check.hashes:
            if number in check.bad:
                continue
            if training is not None and key in training:
                label, first = training[key]
                check.add(number, "also in the training data (eval would measure memorisation)",
                          f"{number} (= {label} row {first})")
            elif key in seen and seen[key][0] != check.label:
                label, first = seen[key]
                check.add(number, "exact duplicate of a row of another source", f"{number} (= {label} row {first})")
            else:
                seen.setdefault(key, (check.label, number))
    return seen


def _rows_text(shown: list[str]) -> str:
    if len(shown) == 1:
        return f"row {shown[0]}"
    more = len(shown) - SHOW_ROWS
    return f"rows {', '.join(shown[:SHOW_ROWS])}" + (f" and {more} more" if more > 0 else "")


def describe(check: SourceCheck, hint: str = "") -> list[str]:
    """One line per problem reason: `data/prefs.jsonl row 17: 'chosen' is empty; <hint>`."""
    lines = [f"{check.label} {_rows_text(shown)}: {reason}{hint}" for reason, shown in check.problems.items()]
    if len(lines) > SHOW_REASONS:
        extra = sum(len(s) for s in list(check.problems.values())[SHOW_REASONS:])
        lines = lines[:SHOW_REASONS] + [f"{check.label}: {extra} more rows with {len(lines) - SHOW_REASONS} "
                                        "other problems (fix the ones above and plan again)"]
    return lines


def display_path(path: str | Path) -> str:
    """A path relative to the working directory when it is under it (what the user typed, usually)."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------
# Plan time: one hook from workflows/plan.py.


def _cache_dir() -> Path:
    return cache_root() / "data_check"


def _code_version() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("data_check.py", "data_formats.py", "data_files.py", "token_lengths.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


_COUNTERS: dict[tuple[str, str | None], TokenCounter | None] = {}


def _counter(tokenizer: str | None, chat_template: str | None) -> TokenCounter | None:
    if not tokenizer:
        return None
    key = (tokenizer, chat_template)
    if key not in _COUNTERS:
        _COUNTERS[key] = TokenCounter.from_dir(tokenizer, chat_template)
    return _COUNTERS[key]


def pipeline_tokenizer(name: str, specs: dict[str, dict[str, Any]], cfg: dict[str, Any]) -> str | None:
    """The tokenizer a stage will load, followed back through upstream stages' outputs (they save
    the tokenizer they started from) to the pipeline's `model.tokenizer`, a local dir or a hub id."""
    spec, seen = specs[name], {name}
    while True:
        policy = spec.get("policy") or {}
        ref = policy.get("stage")
        if ref in specs and ref not in seen:
            seen.add(ref)
            spec = specs[ref]
        elif ref == "checkpoint":
            return cfg["model"].get("tokenizer") or cfg["model"].get("name_or_path")
        else:
            return policy.get("path")


def _check_local_source(source: dict[str, Any], fmt: str, settings: Settings, counter: TokenCounter | None,
                        ) -> list[SourceCheck]:
    """Checks of a local source's files, from the cache when the content has not changed."""
    files = source_files(source)
    fingerprint = dataset_fingerprint(source)
    key_data = [_code_version(), fingerprint, str(source["path"]), fmt, settings.__dict__ | {"stage": None},
                counter.fingerprint if counter else None, PLAN_SCAN_ROWS, PLAN_LENGTH_SAMPLE]
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()
    cached = _cache_dir() / f"{key}.json"
    if cached.is_file():
        try:
            return [SourceCheck.from_json(c) for c in json.loads(cached.read_text())]
        except (ValueError, TypeError, KeyError):
            pass  # an unreadable cache entry is recomputed
    checks = [check_source(iter_rows(path), display_path(path), fmt, settings, counter,
                           scan_limit=PLAN_SCAN_ROWS, length_sample=PLAN_LENGTH_SAMPLE) for path in files]
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([c.to_json() for c in checks]))
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only home: validation still works, uncached
    return checks


def _check_group(name: str, spec: dict[str, Any], group: str, settings: Settings, counter: TokenCounter | None,
                 problems: list[str], notes: list[str]) -> list[list[SourceCheck] | None]:
    """Check each source of `data.<group>`; None for a source that cannot be read at plan time."""
    data = spec["data"]
    out: list[list[SourceCheck] | None] = []
    for i, source in enumerate(data.get(group) or []):
        where = f"stages.{name}.data.{group}[{i}]"
        fmt = source.get("format") or data["format"]
        if not source.get("stage") and (not source.get("path") or not (
                Path(source["path"]).expanduser().exists() or is_hub_id(source["path"]))):
            out.append(None)  # no such file: the planner has reported it
            continue
        if source.get("stage"):
            notes.append(f"{where}: written by stage '{source['stage']}'; checked when {name} starts")
            out.append(None)
            continue
        try:
            if source_files(source) is None:
                notes.append(f"{where}: hub dataset '{source['path']}' is not readable at plan time; "
                             f"{name} checks it before training" + ("" if source.get("revision") else
                                                                    " (pin `revision` to make runs repeatable)"))
                out.append(None)
                continue
            out.append(_check_local_source(source, fmt, settings, counter))
        except SourceError as err:
            problems.append(f"{where}: {err}")
            out.append(None)
        except OSError as err:
            problems.append(f"{where}: cannot read {err.filename or source['path']}: {err.strerror}")
            out.append(None)
    return out


def check_stage_data(name: str, spec: dict[str, Any], specs: dict[str, dict[str, Any]], cfg: dict[str, Any],
                     accepted: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(problems, notes) of one stage's data: what stops the plan, and what the plan shows under it.

    Nothing is added to the spec: the stage fingerprint (workflows/fingerprint.py) already covers
    the data's content, and derived counts would only make it noisier.
    """
    from workflows.data_mix import plan_mixture

    data = spec["data"]
    problems: list[str] = []
    notes: list[str] = []
    prefix = f"stages.{name}.data"
    if data.get("on_invalid") not in ("error", "drop"):
        problems.append(f"{prefix}.on_invalid: '{data.get('on_invalid')}' is not one of error, drop")
    if not 0 <= (data.get("eval_fraction") or 0) < 1:
        problems.append(f"{prefix}.eval_fraction: {data['eval_fraction']} is not in [0, 1)")
    for group in ("sources", "eval_sources"):
        for i, source in enumerate(data.get(group) or []):
            fmt = source.get("format")
            if fmt is not None and fmt not in accepted:
                problems.append(f"{prefix}.{group}[{i}].format: a {spec['type']} stage takes "
                                f"{' or '.join(accepted)} data, not '{fmt}'")
            if source.get("weight") is not None and source["weight"] < 0:
                problems.append(f"{prefix}.{group}[{i}].weight: {source['weight']} is negative")
            if source.get("max_rows") is not None and source["max_rows"] < 1:
                problems.append(f"{prefix}.{group}[{i}].max_rows: {source['max_rows']} is not a positive count")
    formats = {data.get("format")} | {s.get("format") for g in ("sources", "eval_sources") for s in data.get(g) or []}
    if problems or data.get("format") not in accepted or not formats - {None} <= set(FORMATS):
        return problems, notes  # a wrong format makes every row look broken: report the config first

    settings = Settings.from_spec(spec)
    tokenizer = pipeline_tokenizer(name, specs, cfg)
    counter = _counter(tokenizer, spec.get("chat_template"))
    if counter is None and settings.max_length is not None:
        notes.append(f"length check skipped: tokenizer '{tokenizer}' is not a local folder with tokenizer.json")
    train = _check_group(name, spec, "sources", settings, counter, problems, notes)
    evaluation = _check_group(name, spec, "eval_sources", settings, counter, problems, notes)
    flat_train = [c for checks in train if checks for c in checks]
    flat_eval = [c for checks in evaluation if checks for c in checks]
    seen = cross_source_duplicates(flat_train)
    cross_source_duplicates(flat_eval, training=seen)

    drop = data.get("on_invalid") == "drop"
    hint = "" if drop else f"; fix the rows or set {prefix}.on_invalid=drop to skip them"
    invalid = sum(len(c.bad) for c in flat_train + flat_eval)
    for check in flat_train + flat_eval:
        lines = describe(check, hint)
        if drop:
            notes.extend(f"dropping {line}" for line in lines)
        else:
            problems.extend(f"{prefix}: {line}" for line in lines)
        if check.scan_stopped:
            notes.append(f"{check.label}: checked its first {PLAN_SCAN_ROWS:,} rows; {name} checks the rest")
    problems.extend(_kind_problems(prefix, spec["type"], flat_train + flat_eval, counter,
                                   spec["type"] == "sft" and settings.assistant_only_loss))
    for check in flat_train + flat_eval:
        if check.rows and not check.valid and drop:
            problems.append(f"{prefix}: {check.label}: none of its {check.rows} rows is valid")
        elif not check.rows:
            problems.append(f"{prefix}: {check.label}: has no rows")

    checked = sum(c.length_checked for c in flat_train + flat_eval)
    over = sum(c.over_length for c in flat_train + flat_eval)
    valid = sum(c.valid for c in flat_train + flat_eval)
    over_rows = round(over * valid / checked) if checked else 0
    if over:
        longest = max((c.longest + (c.label,) for c in flat_train + flat_eval if c.longest), key=lambda x: x[0])
        estimate = "" if checked == valid else f" (estimated from a sample of {checked:,})"
        notes.append(f"{over_rows:,} of {valid:,} rows ({100 * over_rows / valid:.1f}%) are longer than "
                     f"max_length={settings.max_length} tokens{estimate}, longest {longest[0]} ({longest[2]} row "
                     f"{longest[1]}): {settings.truncation()}")
    if drop and invalid:
        notes.insert(0, f"dropping {invalid:,} invalid rows (on_invalid: drop)")
    if all(train) and train and not problems:
        sizes = [sum(c.valid for c in checks) for checks in train]
        sources = data["sources"]
        mixture = plan_mixture(sizes, [s.get("weight") for s in sources], [s.get("max_rows") for s in sources],
                               data["seed"], data.get("shuffle", True),
                               0.0 if data.get("eval_sources") else data.get("eval_fraction") or 0.0)
        if any(s.get("weight") is not None or s.get("max_rows") is not None for s in sources):
            parts = [f"{display_path(s['path'])} {n:,} ({100 * n / max(1, sum(mixture.counts)):.0f}%)"
                     for s, n in zip(sources, mixture.counts)]
            notes.append(f"mixture of {sum(mixture.counts):,} rows: {', '.join(parts)}")
        if mixture.evaluation:
            notes.append(f"eval: {len(mixture.evaluation):,} rows held out (eval_fraction {data['eval_fraction']})")
    return problems, notes


def _kind_problems(prefix: str, stage_type: str, checks: list[SourceCheck], counter: TokenCounter | None,
                   assistant_only_loss: bool = False) -> list[str]:
    """A stage's sources must agree on conversations vs plain strings; conversations need a template."""
    kinds = {(c.shape, c.conversational) for c in checks if c.conversational is not None}
    problems = []
    agree = len({k for _, k in kinds}) <= 1 or (stage_type == "sft" and sft_common_shape(kinds) is not None)
    if not agree:
        conv = ", ".join(c.label for c in checks if c.conversational)
        plain = ", ".join(c.label for c in checks if c.conversational is False)
        problems.append(f"{prefix}: mixes conversations ({conv}) with plain strings ({plain}); TRL tokenizes a "
                        "dataset one way (chat template or not): convert one side, or train them in two stages")
    if any(k for _, k in kinds) and counter is not None and not counter.template_source:
        problems.append(f"{prefix}: conversational data needs a chat template and tokenizer "
                        f"'{display_path(counter.tokenizer_dir)}' has none; set model.chat_template=<file.jinja>")
    elif assistant_only_loss and any(k for _, k in kinds) and counter is not None \
            and not trl_can_mask(counter.template_source):
        stage = prefix.removesuffix(".data")
        problems.append(f"{stage}.trainer.assistant_only_loss: the chat template has no {{% generation %}} markers "
                        "and TRL has no training version of it; wrap the assistant content (and its end token) in "
                        "{% generation %}...{% endgeneration %} in a copy given as model.chat_template, or set "
                        "assistant_only_loss=false")
    return problems


def trl_can_mask(template: str | None) -> bool:
    """Whether SFTTrainer can mask the loss to assistant turns with this template: it has
    `{% generation %}` markers, or TRL ships a training version of it (trl/chat_templates/X.jinja
    next to X_training.jinja; found without importing trl)."""
    import importlib.util

    if has_generation_markers(template):
        return True
    spec = importlib.util.find_spec("trl")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for training in Path(folder, "chat_templates").glob("*_training.jinja"):
            original = training.with_name(training.name.replace("_training", ""))
            if original.is_file() and original.read_text(encoding="utf-8") == template:
                return True
    return False


def check_pipeline_data(specs: dict[str, dict[str, Any]], cfg: dict[str, Any]
                        ) -> tuple[list[str], dict[str, list[str]]]:
    """(problems, notes per stage) of every stage's data: the planner's hook."""
    from workflows.registry import STAGE_TYPES

    problems: list[str] = []
    notes: dict[str, list[str]] = {}
    for name, spec in specs.items():
        stage_type = STAGE_TYPES.get(spec["type"])
        # Training stages only: what a TRL trainer needs is known here; a stage that reads prompts
        # (generate, onpolicy) may take rows without answers, and checks them itself.
        if spec.get("data") and stage_type and stage_type.trl_config:
            found, notes[name] = check_stage_data(name, spec, specs, cfg, stage_type.data_formats)
            problems.extend(found)
    save_file_hashes()
    return problems, notes


__all__ = ["FORMATS", "Settings", "SourceCheck", "check_source", "check_pipeline_data", "cross_source_duplicates",
           "dataset_fingerprint", "describe"]

"""Row and source checks of a stage's data, with the trainer's length and loss-mask rules
(the list of checks: README.md, "Validation before any compute"). The planner and the stage process
run the same functions (through prepare.py), so the stage keeps exactly the rows the plan promised.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.data.files import BadRow
from posttrain.data.formats import check_row, is_conversational, last_turn_as_completion, sft_common_shape, \
    target_shape, to_trainer_rows
from posttrain.data.tokens import TokenCounter, has_generation_markers
from posttrain.spec import StageSpec

TRL_MAX_LENGTH = 1024  # SFTConfig / DPOConfig / KTOConfig `max_length` default
SHOW_ROWS = 5  # row numbers listed per problem
SHOW_REASONS = 8  # problem lines per source before "... and N more"
# How TRL's trainers tokenize and truncate differs by trainer; a trainer not listed is treated like SFT.
TRAINERS = {"SFTConfig": "SFTTrainer", "DPOConfig": "DPOTrainer", "KTOConfig": "KTOTrainer",
            "RewardConfig": "RewardTrainer", "GRPOConfig": "GRPOTrainer", "RLOOConfig": "RLOOTrainer"}
SAMPLING = ("GRPOConfig", "RLOOConfig")  # they read prompts only (no `max_length`): no length check


@dataclass
class Settings:
    """What a stage's trainer does with lengths and loss masks (from its `trainer` keys)."""

    stage: str
    trl_config: str | None  # the stage type's TRL config class: decides truncation and masking
    shapes: tuple[str, ...] = ()  # the trainer-side shapes the stage type takes
    seed: int = 0
    max_length: int | None = TRL_MAX_LENGTH
    truncation_mode: str = "keep_start"
    assistant_only_loss: bool = False
    completion_only_loss: bool | None = None  # None = TRL's default: on for prompt/completion rows
    packing: bool = False
    # assistant_only_loss with a chat template TRL cannot mask: each conversation's last assistant
    # turn is trained as a conversational prompt/completion pair (set by `prepare`, see `last_turn_loss`)
    last_turn: bool = False

    @classmethod
    def from_spec(cls, spec: StageSpec, trl_config: str | None, shapes: tuple[str, ...]) -> Settings:
        trainer = spec.trainer
        return cls(spec.name, trl_config, shapes, spec.data.seed if spec.data else 0,
                   trainer.get("max_length", None if trl_config in SAMPLING else TRL_MAX_LENGTH),
                   trainer.get("truncation_mode", "keep_start"),
                   bool(trainer.get("assistant_only_loss", False)), trainer.get("completion_only_loss"),
                   bool(trainer.get("packing", False)))

    @property
    def sft(self) -> bool:
        """SFTTrainer's rules: the loss may cover the prompt, and mixed shapes are unified (messages)."""
        return self.trl_config == "SFTConfig"

    def loss_start(self, row: dict[str, Any], prompt_tokens: int) -> int:
        """Where the first token that carries loss may start: the trainer drops a row truncated before it."""
        if "text" in row or (self.sft and "messages" in row and not self.assistant_only_loss):
            return 0
        if self.sft and "completion" in row and self.completion_only_loss is False:
            return 0
        if self.trl_config != "KTOConfig" and self.truncation_mode == "keep_end":
            return 0  # the end (the response) is kept
        return prompt_tokens

    def truncation(self) -> str:
        trainer = TRAINERS.get(self.trl_config or "", "the trainer")
        if self.trl_config == "RewardConfig":
            return f"{trainer} drops the pairs whose prompt+chosen or prompt+rejected is longer than {self.max_length}"
        if self.truncation_mode == "keep_end" and self.trl_config != "KTOConfig":
            return f"{trainer} keeps their last {self.max_length} tokens, cutting the start of the prompt"
        what = {"DPOConfig": "prompt+chosen and prompt+rejected", "KTOConfig": "prompt+completion"}.get(
            self.trl_config or "", "them")
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
    lengths: list[list[int]] = field(default_factory=list)  # [prompt tokens, longest sequence] per measured row
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
    result = SourceCheck(label, fmt, target_shape(fmt, settings.shapes))
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
    if settings.last_turn:  # measured as the trainer will see them
        sample = [(n, [last_turn_as_completion(r) if "messages" in r else r for r in rows]) for n, rows in sample]
    lengths = iter(counter.lengths([r for _, trainer_rows in sample for r in trainer_rows]))
    trainer = TRAINERS.get(settings.trl_config or "", "the trainer")
    for number, trainer_rows in sample:
        measured = [(row, next(lengths)) for row in trainer_rows]
        refused = next((m for _, m in measured if isinstance(m, str)), None)
        if refused:
            result.add(number, refused)
            continue
        longest = max(full for _, (_, full) in measured)
        result.lengths.append([max(prompt for _, (prompt, _) in measured), longest])
        if any(settings.loss_start(row, prompt) >= limit for row, (prompt, _) in measured):
            prompt = max(prompt for _, (prompt, _) in measured)
            result.add(number, f"the prompt alone fills max_length={limit} tokens: {trainer} would drop the row "
                               "silently (no response token left); raise max_length (max_length=auto measures "
                               "it) or shorten the prompt",
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


def kind_problems(prefix: str, settings: Settings, checks: list[SourceCheck], counter: TokenCounter | None
                  ) -> list[str]:
    """A stage's sources must agree on conversations vs plain strings; conversations need a template."""
    kinds = {(c.shape, c.conversational) for c in checks if c.conversational is not None}
    problems = []
    agree = len({k for _, k in kinds}) <= 1 or (settings.sft and sft_common_shape(kinds) is not None)
    if not agree:
        conv = ", ".join(c.label for c in checks if c.conversational)
        plain = ", ".join(c.label for c in checks if c.conversational is False)
        problems.append(f"{prefix}: mixes conversations ({conv}) with plain strings ({plain}); TRL tokenizes a "
                        "dataset one way (chat template or not): convert one side, or train them in two stages")
    if any(k for _, k in kinds) and counter is not None and not counter.template_source:
        problems.append(f"{prefix}: conversational data needs a chat template and tokenizer "
                        f"'{display_path(counter.tokenizer_dir)}' has none; set model.chat_template=<file.jinja>")
    return problems


def last_turn_loss(settings: Settings, counter: TokenCounter | None) -> bool:
    """Whether SFT's response-only loss needs the last-turn form: `assistant_only_loss` is asked for
    but TRL cannot mask this chat template (no `{% generation %}` markers, no training version).

    Then each conversation becomes a conversational prompt/completion pair, prompt = every message
    before its last assistant turn, completion = that turn, and TRL's completion-only loss covers
    the completion's tokens (the answer and its end-of-turn tokens). Earlier assistant turns of a
    multi-turn conversation are context, without loss. Works with any template whose rendered
    prompt (with the generation prompt) is a prefix of the rendered conversation.
    """
    return (settings.sft and settings.assistant_only_loss and counter is not None
            and counter.template_source is not None and not trl_can_mask(counter.template_source))


def trl_can_mask(template: str | None) -> bool:
    """Whether SFTTrainer can mask the loss to assistant turns with this template: it has
    `{% generation %}` markers, or TRL ships a training version of it (trl/chat_templates/X.jinja
    next to X_training.jinja; found without importing trl)."""
    if has_generation_markers(template):
        return True
    spec = importlib.util.find_spec("trl")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for training in Path(folder, "chat_templates").glob("*_training.jinja"):
            original = training.with_name(training.name.replace("_training", ""))
            if original.is_file() and original.read_text(encoding="utf-8") == template:
                return True
    return False

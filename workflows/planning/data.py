"""Plan-time data validation: every training stage's data through the one preparation pipeline
(posttrain/data/prepare.py), before any compute.

Speed: every row is parsed and checked in one streaming pass in pure Python, up to PLAN_SCAN_ROWS
rows per source; token lengths are measured on a seeded sample of PLAN_LENGTH_SAMPLE valid rows
per source, batched through `tokenizers`. Results are cached per (file content, format,
tokenizer, settings) in $POSTTRAIN_CACHE_DIR (default ~/.cache/posttrain), so re-planning an
unchanged pipeline re-reads nothing. Hub datasets and upstream outputs are checked by the stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from posttrain.data import check as check_module
from posttrain.data import files as files_module
from posttrain.data import strict as strict_module
from posttrain.data import formats as formats_module
from posttrain.data import tokens as tokens_module
from posttrain.data.check import Settings, SourceCheck, check_source, display_path
from posttrain.data.files import dataset_fingerprint, iter_rows, save_file_hashes, source_files
from posttrain.data.prepare import Deferred, prepare
from posttrain.data.tokens import TokenCounter, UnreadableTokenizer
from posttrain.hashing import cache_root
from posttrain.jsonio import write_json
from posttrain.refs import CHECKPOINT, is_hub_id
from posttrain.registry import STAGE_TYPES
from posttrain.spec import Source, StageSpec

PLAN_SCAN_ROWS = 1_000_000  # rows per source the planner reads; the stage reads them all
PLAN_LENGTH_SAMPLE = 10_000  # rows per source whose tokens the planner counts (~1 s with a BPE tokenizer)
AUTO = "auto"  # `trainer.max_length: auto`: measured on the stage's rows with the policy's tokenizer
AUTO_PERCENTILE = 99  # max_length auto covers this share of the measured rows whole ...
AUTO_RESPONSE_TOKENS = 8  # ... and leaves at least this many response tokens after the longest prompt
_PROBE_LENGTH = 1 << 30  # measuring pass: nothing is too long


def _code_version() -> str:
    """What the cached checks depend on: the checking code itself."""
    digest = hashlib.sha256()
    for module in (check_module, formats_module, files_module, strict_module, tokens_module):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


_COUNTERS: dict[tuple[str, str | None], TokenCounter | None] = {}


def _counter(tokenizer: str | None, chat_template: str | None) -> TokenCounter | None:
    if not tokenizer:
        return None
    key = (tokenizer, chat_template)
    if key not in _COUNTERS:
        _COUNTERS[key] = TokenCounter.from_dir(tokenizer, chat_template)
    return _COUNTERS[key]


def pipeline_tokenizer(name: str, specs: dict[str, StageSpec], model: dict) -> str | None:
    """The tokenizer a stage will load, followed back through upstream stages' outputs (they save
    the tokenizer they started from) to the pipeline's `model.tokenizer`, a local dir or a hub id."""
    spec, seen = specs[name], {name}
    while True:
        policy = spec.policy
        ref = policy.stage if policy else None
        if ref in specs and ref not in seen:
            seen.add(ref)
            spec = specs[ref]
        elif ref == CHECKPOINT:
            return model.get("tokenizer") or model.get("name_or_path")
        else:
            return policy.tokenizer_path if policy else None


def _read(source: Source, fmt: str, settings: Settings, counter: TokenCounter | None) -> list[SourceCheck] | None:
    """A source's checks at plan time, from the cache when its content has not changed."""
    if source.stage:
        raise Deferred(f"written by stage '{source.stage}'; checked when {settings.stage} starts")
    if not source.path or not (Path(source.path).expanduser().exists() or is_hub_id(source.path)):
        return None  # no such file: the planner has reported it
    files = source_files(source)
    if files is None:
        pin = "" if source.revision else " (pin `revision` to make runs repeatable)"
        raise Deferred(f"hub dataset '{source.path}' is not readable at plan time; {settings.stage} checks it "
                       f"before training{pin}")
    key_data = [_code_version(), dataset_fingerprint(source), str(source.path), fmt, settings.__dict__ | {"stage": None},
                counter.fingerprint if counter else None, PLAN_SCAN_ROWS, PLAN_LENGTH_SAMPLE]
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()
    cached = cache_root() / "data_check" / f"{key}.json"
    if cached.is_file():
        try:
            return [SourceCheck.from_json(c) for c in json.loads(cached.read_text())]
        except (ValueError, TypeError, KeyError):
            pass  # an unreadable cache entry is recomputed
    checks = [check_source(iter_rows(path), display_path(path), fmt, settings, counter,
                           scan_limit=PLAN_SCAN_ROWS, length_sample=PLAN_LENGTH_SAMPLE) for path in files]
    try:
        write_json(cached, [c.to_json() for c in checks], indent=None)
    except OSError:
        pass  # a read-only home: validation still works, uncached
    return checks


def context_length(model: dict) -> int | None:
    """The longest sequence the starting model takes: a GGUF header's, the built config's, a local dir's."""
    if model.get("context_length"):
        return int(model["context_length"])
    if (model.get("config") or {}).get("max_position_embeddings") and not model.get("name_or_path"):
        return int(model["config"]["max_position_embeddings"])
    config = Path(str(model.get("name_or_path") or "")).expanduser() / "config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("max_position_embeddings")
        except ValueError:
            return None
    return None


def choose_max_length(checks: list[SourceCheck], context: int | None) -> tuple[int, str] | None:
    """(max_length, the plan's line about it) from the measured rows: the AUTO_PERCENTILE-th percentile
    of their lengths, at least the longest prompt + AUTO_RESPONSE_TOKENS, rounded up to a multiple
    of 8, at most the model's context length. None when no row was measured."""
    lengths = [pair for check in checks for pair in check.lengths]
    if not lengths:
        return None
    fulls = sorted(full for _, full in lengths)
    percentile = fulls[max(0, -(-len(fulls) * AUTO_PERCENTILE // 100) - 1)]
    prompt = max(p for p, _ in lengths)
    chosen = -(-max(percentile, prompt + AUTO_RESPONSE_TOKENS) // 8) * 8
    capped = f", capped at the model's context length {context}" if context and chosen > context else ""
    chosen = min(chosen, context) if context else chosen
    return chosen, (f"max_length auto = {chosen} tokens: {len(fulls):,} rows measured, {AUTO_PERCENTILE}th percentile "
                    f"{percentile}, longest {fulls[-1]}, longest prompt {prompt}{capped}")


def check_pipeline_data(specs: dict[str, StageSpec], model: dict) -> tuple[list[str], dict[str, list[str]]]:
    """(problems, notes per stage) of every training stage's data.

    Training stages only: what a TRL trainer needs is known here; a stage that reads prompts
    (generate, onpolicy) may take rows without answers, and checks them itself.
    """
    problems: list[str] = []
    notes: dict[str, list[str]] = {}
    for name, spec in specs.items():
        stage_type = STAGE_TYPES[spec.type]
        if spec.data is None or not stage_type.trl_config:
            continue
        settings = Settings.from_spec(spec, stage_type.trl_config, stage_type.shapes)
        tokenizer = pipeline_tokenizer(name, specs, model)
        try:
            counter = _counter(tokenizer, spec.chat_template)
        except UnreadableTokenizer as e:
            problems.append(f"stages.{name}: {e}")
            continue
        skipped = [] if counter is not None or settings.max_length is None else [
            f"length check skipped: tokenizer '{tokenizer}' is not a local folder with tokenizer.json"]
        chosen: list[str] = []
        if settings.max_length == AUTO:
            if counter is None:
                problems.append(f"stages.{name}.trainer.max_length: auto measures the rows with the policy's "
                                f"tokenizer, and '{tokenizer}' is not a local folder with tokenizer.json; "
                                "give a number")
                continue
            settings.max_length = _PROBE_LENGTH
            probe = prepare(spec, stage_type.formats, settings, counter, _read)
            picked = choose_max_length(probe.checks, context_length(model))
            if picked is None:
                problems.extend(probe.problems or [f"stages.{name}.trainer.max_length: auto found no local rows to "
                                                   "measure (hub or upstream data); give a number"])
                continue
            settings.max_length = spec.trainer["max_length"] = picked[0]
            chosen.append(picked[1])
        prepared = prepare(spec, stage_type.formats, settings, counter, _read, notes=skipped)
        problems.extend(prepared.problems)
        notes[name] = chosen + prepared.notes
    save_file_hashes()
    return problems, notes

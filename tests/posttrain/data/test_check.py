"""Row and source checks (posttrain/data/check.py), without the planner: every broken row is named
by its row and reason, and duplicates are found across sources and between eval and training data.

tests/data/broken/ holds one problem per file; next to each, `<file>.expected` gives its format,
optional trainer overrides and the text the problem must contain (the planner's view of the same
files is tests/workflows/planning/test_data.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.data.check import Settings, check_source, cross_source_duplicates, describe, display_path
from posttrain.data.files import iter_rows
from posttrain.data.tokens import TokenCounter
from posttrain.registry import STAGE_TYPES
from posttrain.spec import StageSpec
from tests.conftest import ROOT

BROKEN = sorted(p for p in (ROOT / "tests" / "data" / "broken").iterdir() if p.suffix in (".jsonl", ".json", ".csv"))
STAGE_FOR_FORMAT = {"preference": "dpo", "unpaired_preference": "kto"}  # else sft
TINY_TOKENIZER = ROOT / "demo" / "tiny_tokenizer"  # the demo pipelines' tokenizer


def expected(path: Path) -> tuple[str, list[str], list[str]]:
    fields: dict[str, list[str]] = {"format": [], "override": [], "expect": []}
    for line in Path(f"{path}.expected").read_text().splitlines():
        key, _, value = line.partition(": ")
        fields[key].append(value)
    return fields["format"][0], fields["override"], fields["expect"]


def settings_for(stage: str, fmt: str, overrides: list[str]) -> Settings:
    """The check settings of a `stage` stage (also its type) with `stages.<stage>.trainer.<key>=<value>` overrides."""
    trainer = {}
    for override in overrides:
        key, _, value = override.partition("=")
        prefix = f"stages.{stage}.trainer."
        assert key.startswith(prefix), f"not a trainer override of {stage}: {override}"
        trainer[key.removeprefix(prefix)] = json.loads(value)
    spec = StageSpec.from_dict({"name": stage, "type": stage, "stage_dir": "unused", "model_dir": "unused", "seed": 0,
                                "trainer": trainer, "data": {"format": fmt}})
    stage_type = STAGE_TYPES[stage]
    return Settings.from_spec(spec, stage_type.trl_config, stage_type.shapes)


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_broken_file_has_one_problem_named_by_row_and_reason(path):
    fmt, overrides, expects = expected(path)
    stage = STAGE_FOR_FORMAT.get(fmt, "sft")
    check = check_source(iter_rows(path), display_path(path), fmt, settings_for(stage, fmt, overrides),
                         TokenCounter.from_dir(TINY_TOKENIZER))
    lines = describe(check)
    assert len(lines) == 1, lines  # one problem per file, reported once
    [line] = lines
    assert line.startswith(f"{display_path(path)} row"), line
    for text in expects:
        assert text in line, line
    assert check.bad and check.valid == check.rows - len(check.bad)


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def test_duplicates_across_sources_and_eval_rows_seen_in_training():
    settings = settings_for("sft", "messages", [])
    alpaca = check_source(enumerate([{"instruction": "copy", "input": "xy", "output": "xy"},
                                     {"instruction": "len", "input": "abc", "output": "3"}], 1),
                          "a.jsonl", "alpaca", settings, None)
    messages = check_source(enumerate([chat("copy\n\nxy", "xy"), chat("copy: zz", "zz")], 1),
                            "m.jsonl", "messages", settings, None)
    held_out = check_source(enumerate([chat("copy: zz", "zz"), chat("copy: qq", "qq")], 1),
                            "e.jsonl", "messages", settings, None)
    cross_source_duplicates([held_out], training=cross_source_duplicates([alpaca, messages]))
    assert describe(alpaca) == []
    assert describe(messages) == ["m.jsonl row 1 (= a.jsonl row 1): exact duplicate of a row of another source"]
    assert describe(held_out) == [("e.jsonl row 1 (= m.jsonl row 2): also in the training data (eval would measure "
                                   "memorisation)")]
    assert (messages.bad, held_out.bad) == ({1}, {1})  # the first copy is kept, the later one dropped

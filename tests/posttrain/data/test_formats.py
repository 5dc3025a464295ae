"""Formats become the trainer's columns, sources are read like `datasets` reads them, mixtures
have the proportions their weights say, and token counts match TRL's tokenization."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT
from posttrain.data.files import dataset_fingerprint, folder_splits, iter_rows, source_files
from posttrain.data.formats import check_row, to_trainer_rows
from posttrain.data.mix import plan_mixture, weighted_counts

TINY_TOKENIZER = ROOT / "demo" / "tiny_tokenizer"
THINK = "<think>The word is 'ab'; copied, it stays 'ab'.</think>ab"  # chain of thought, kept verbatim


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize("fmt, row, shape, expected", [
    ("text", {"text": "Q: copy: ab\nA: ab", "id": 3}, "text", [{"text": "Q: copy: ab\nA: ab"}]),
    ("alpaca", {"instruction": "copy", "input": "ab", "output": THINK}, "messages",
     [{"messages": [user("copy\n\nab"), assistant(THINK)]}]),
    ("alpaca", {"instruction": "Say hi.", "input": "", "output": "hi", "system": "Be brief."}, "messages",
     [{"messages": [{"role": "system", "content": "Be brief."}, user("Say hi."), assistant("hi")]}]),
    ("sharegpt", {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "copy: ab"},
                                    {"from": "gpt", "value": THINK}]}, "messages",
     [{"messages": [{"role": "system", "content": "Be brief."}, user("copy: ab"), assistant(THINK)]}]),
    ("messages", {"messages": [user("copy: ab"), assistant(THINK)], "task": "copy"}, "messages",
     [{"messages": [user("copy: ab"), assistant(THINK)]}]),
    ("prompt_completion", {"prompt": "Q: copy: ab\nA:", "completion": " " + THINK}, "prompt_completion",
     [{"prompt": "Q: copy: ab\nA:", "completion": " " + THINK}]),
    ("preference", {"prompt": [user("copy: ab")], "chosen": [assistant(THINK)], "rejected": [assistant("aab")]},
     "preference", [{"prompt": [user("copy: ab")], "chosen": [assistant(THINK)], "rejected": [assistant("aab")]}]),
    ("preference", {"prompt": "Q: copy: ab\nA:", "chosen": " ab", "rejected": " aab"}, "unpaired_preference",
     [{"prompt": "Q: copy: ab\nA:", "completion": " ab", "label": True},
      {"prompt": "Q: copy: ab\nA:", "completion": " aab", "label": False}]),
    ("unpaired_preference", {"prompt": [user("copy: ab")], "completion": [assistant(THINK)], "label": False},
     "unpaired_preference", [{"prompt": [user("copy: ab")], "completion": [assistant(THINK)], "label": False}]),
])
def test_each_format_becomes_the_trainer_columns(fmt, row, shape, expected):
    assert check_row(row, fmt) == []
    assert to_trainer_rows(row, fmt, shape) == expected


@pytest.mark.parametrize("pair", [
    {"chosen": "The sky is blue.", "rejected": "The sky is green."},
    {"chosen": "Q: copy: ab\nA: ab", "rejected": "Q: copy: ab\nA: aab"},
    {"chosen": [user("What color is the sky?"), assistant("It is blue.")],
     "rejected": [user("What color is the sky?"), assistant("It is green.")]},
    {"prompt": "What color?", "chosen": [user("What color?"), assistant("Blue.")],  # a redundant string prompt
     "rejected": [user("What color?"), assistant("Green.")]},
])
def test_implicit_prompts_split_like_trl(pair):
    from trl.data_utils import maybe_extract_prompt

    [converted] = to_trainer_rows(pair, "preference", "preference")
    assert converted == maybe_extract_prompt(dict(pair))


def test_preference_pairs_unpair_like_trl():
    from datasets import Dataset
    from trl.data_utils import unpair_preference_dataset

    pairs = [{"prompt": "Q: copy: ab\nA:", "chosen": " ab", "rejected": " aab"},
             {"prompt": "Q: len: abc\nA:", "chosen": " 3", "rejected": " 4"}]
    ours = [r for pair in pairs for r in to_trainer_rows(pair, "preference", "unpaired_preference")]
    theirs = unpair_preference_dataset(Dataset.from_list(pairs)).to_list()
    assert sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs))


def test_a_row_of_another_format_gets_a_hint():
    [reason] = check_row({"instruction": "copy", "input": "ab", "output": "ab"}, "messages")
    assert reason == "missing column 'messages' (row has: instruction, input, output); this looks like alpaca data " \
                     "(format: alpaca)"


# ---------------------------------------------------------------------------------------------
# Mixtures


def test_weights_share_out_the_total():
    assert weighted_counts([100, 100], [3.0, 1.0]) == [150, 50]
    assert weighted_counts([100, 100], [None, None]) == [100, 100]  # no weights: plain concatenation
    assert weighted_counts([60, 30, 10], [1.0, None, 2.0]) == [25, 25, 50]  # unset = 1.0
    assert sum(weighted_counts([7, 11, 13], [1.0, 1.0, 1.0])) == 31  # rounding keeps the total


def test_mixture_proportions_repeats_caps_and_eval_split():
    mixture = plan_mixture([100, 100], [3.0, 1.0], [None, None], seed=1)
    per_source = Counter(i for i, _ in mixture.train)
    assert per_source == {0: 150, 1: 50}
    repeats = Counter(j for i, j in mixture.train if i == 0)
    assert set(repeats.values()) == {1, 2}  # every row once, half of them twice: never three times
    assert len({j for i, j in mixture.train if i == 1}) == 50  # subsampled without replacement
    assert plan_mixture([100, 100], [3.0, 1.0], [None, None], seed=1) == mixture  # deterministic
    assert plan_mixture([100, 100], [3.0, 1.0], [None, None], seed=2).train != mixture.train

    capped = plan_mixture([1000, 10], [None, None], [100, None], seed=0, eval_fraction=0.1)
    assert Counter(i for i, _ in capped.train) == {0: 90, 1: 9}
    assert Counter(i for i, _ in capped.evaluation) == {0: 10, 1: 1}
    assert not set(capped.train) & set(capped.evaluation)  # an eval row is never trained on


def test_the_stage_builds_the_mixture_the_weights_ask_for(tmp_path):
    from stages.lib.data import load_stage_data

    sources = []
    for name, n in (("a", 60), ("b", 60), ("c", 30)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"messages": [user(f"{name}: {i}"), assistant(str(i))]}) + "\n"
                                for i in range(n)))
        sources.append({"path": str(path)})
    sources[0]["weight"], sources[1]["weight"], sources[2]["weight"] = 2.0, 1.0, 1.0
    sources[1]["max_rows"] = 40
    data = {"format": "messages", "sources": sources, "seed": 7, "shuffle": True, "eval_fraction": 0.1,
            "on_invalid": "error"}
    loaded = load_stage_data({"name": "sft", "type": "sft", "trainer": {}, "data": data})
    origin = Counter(row["messages"][0]["content"].split(":")[0] for row in loaded.train)
    total = 54 + 36 + 27  # after the 10% eval carve of 60, 40 (capped) and 30 rows
    assert origin == {"a": total // 2 + 1, "b": total // 4, "c": total // 4}  # 2:1:1, largest remainder to a
    assert len(loaded.evaluation) == 6 + 4 + 3
    assert loaded.metrics["data/rows"] == total and loaded.metrics["data/eval_rows"] == 13
    again = load_stage_data({"name": "sft", "type": "sft", "trainer": {}, "data": data})
    assert again.train.to_list() == loaded.train.to_list()  # the same rows in the same order


# ---------------------------------------------------------------------------------------------
# Sources


def test_rows_are_numbered_as_editors_show_them(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "one"}\n\n{"text": "three"}\n')
    assert [n for n, _ in iter_rows(jsonl)] == [1, 3]
    table = tmp_path / "a.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([["prompt", "completion", "label"], ["two\nlines", "x", "True"], ["p", "y", "false"]])
    assert [(n, r["label"]) for n, r in iter_rows(table)] == [(2, True), (4, False)]
    array = tmp_path / "a.json"
    array.write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert [n for n, _ in iter_rows(array)] == [1, 2]
    columns = tmp_path / "c.json"
    columns.write_text(json.dumps({"text": ["one", "two"]}))
    assert [r for _, r in iter_rows(columns)] == [{"text": "one"}, {"text": "two"}]


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def hub_like(tmp_path) -> Path:
    """A dataset folder laid out like a hub repo: two configs in the README, sharded split files."""
    repo = tmp_path / "org__prefs"
    for config, tag in (("main", "m"), ("extra", "x")):
        for split, n in (("train", 5), ("test", 2)):
            rows = [{"prompt": f"{tag}{split}{i}: copy ab", "chosen": " ab", "rejected": " aab"} for i in range(n)]
            write_parquet(repo / config / f"{split}-00000-of-00001.parquet", rows)
    (repo / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: main\n  default: true\n  data_files:\n"
        "  - split: train\n    path: main/train-*\n  - split: test\n    path: main/test-*\n"
        "- config_name: extra\n  data_files:\n"
        "  - split: train\n    path: extra/train-*\n  - split: test\n    path: extra/test-*\n"
        "---\n# A preference dataset\n")
    return repo


@pytest.mark.parametrize("name, split, first", [(None, "train", "mtrain0"), ("extra", "test", "xtest0")])
def test_a_hub_like_folder_is_read_as_datasets_reads_it(hub_like, name, split, first):
    """The planner's stdlib resolution and the stage's `datasets.load_dataset` agree on the rows."""
    from stages.lib.data import load_source

    source = {"path": str(hub_like), "name": name, "split": split}
    planned = [row for path in source_files(source) for _, row in iter_rows(path)]
    loaded = load_source(source).to_list()
    assert planned == loaded and planned[0]["prompt"].startswith(first)


def test_folder_splits_follow_datasets_naming_rules(tmp_path):
    sharded = tmp_path / "sharded"
    for name in ("data/train-00000-of-00002.jsonl", "data/train-00001-of-00002.jsonl", "data/validation-00000-of-00001.jsonl"):
        (sharded / name).parent.mkdir(parents=True, exist_ok=True)
        (sharded / name).write_text('{"text": "x"}\n')
    assert {s: len(f) for s, f in folder_splits(sharded).items()} == {"train": 2, "validation": 1}
    named = tmp_path / "named"
    named.mkdir()
    for name in ("my_train.jsonl", "dev.jsonl", "notes.jsonl"):
        (named / name).write_text('{"text": "x"}\n')
    assert {s: [p.name for p in f] for s, f in folder_splits(named).items()} == {
        "train": ["my_train.jsonl"], "validation": ["dev.jsonl"]}
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("part1.jsonl", "part2.jsonl"):
        (plain / name).write_text('{"text": "x"}\n')
    assert [p.name for p in folder_splits(plain)["train"]] == ["part1.jsonl", "part2.jsonl"]


def test_dataset_fingerprint_follows_content(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n')
    first = dataset_fingerprint({"path": str(path)})
    assert dataset_fingerprint({"path": str(path)}) == first
    path.write_text('{"text": "b"}\n')
    assert dataset_fingerprint({"path": str(path)}) != first
    hub = {"path": "org/data", "split": "train"}
    assert dataset_fingerprint(hub) != dataset_fingerprint({**hub, "revision": "abc123"})


# ---------------------------------------------------------------------------------------------
# Token counts


CONVERSATIONS = [
    [user("copy: ab"), assistant("ab")],
    [{"role": "system", "content": "Be brief."}, user("reverse: abc"), assistant(THINK)],
    [user("len: abcd"), assistant("4"), user("and now: ab"), assistant("2")],
]


def test_chat_rendering_and_token_counts_match_transformers_and_trl():
    from transformers import AutoTokenizer
    from trl.data_utils import common_prefix_length

    from posttrain.data.tokens import TokenCounter

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    counter = TokenCounter.from_dir(TINY_TOKENIZER)
    for conversation in CONVERSATIONS:
        assert counter.render(conversation) == tokenizer.apply_chat_template(conversation, tokenize=False)
        assert counter.render(conversation[:-1], True) == tokenizer.apply_chat_template(
            conversation[:-1], tokenize=False, add_generation_prompt=True)
    rows = [{"prompt": c[:-1], "chosen": c[-1:], "rejected": [assistant("nope")]} for c in CONVERSATIONS]
    rows.append({"prompt": "Q: copy: ab\nA:", "chosen": " ab", "rejected": " aab"})
    for row, (prompt_len, longest) in zip(rows, counter.lengths(rows)):
        if isinstance(row["prompt"], list):  # what DPOTrainer._prepare_dataset computes
            ids = lambda msgs, **kw: tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, **kw)["input_ids"]
            prompt = ids(row["prompt"], add_generation_prompt=True)
            fulls = [ids(row["prompt"] + row[k]) for k in ("chosen", "rejected")]
        else:
            prompt = tokenizer(text=row["prompt"])["input_ids"]
            fulls = [tokenizer(text=row["prompt"] + row[k] + tokenizer.eos_token)["input_ids"] for k in ("chosen", "rejected")]
        assert prompt_len == min(common_prefix_length(prompt, f) for f in fulls)
        assert longest == max(len(f) for f in fulls)

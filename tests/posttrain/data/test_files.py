"""Sources are read without `datasets`: row readers number rows as editors show them, folders split
as `datasets` splits them, and fingerprints follow content (posttrain/data/files.py)."""

from __future__ import annotations

import csv
import json

from posttrain.data.files import dataset_fingerprint, folder_splits, iter_rows
from posttrain.spec import Source


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
    first = dataset_fingerprint(Source(path=str(path)))
    assert dataset_fingerprint(Source(path=str(path))) == first
    path.write_text('{"text": "b"}\n')
    assert dataset_fingerprint(Source(path=str(path))) != first
    hub = Source(path="org/data", split="train")
    assert dataset_fingerprint(hub) != dataset_fingerprint(Source(path="org/data", split="train", revision="abc123"))

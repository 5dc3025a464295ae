"""A stage process loads its data (stages/lib/data.py): the mixture the weights ask for, the rows
the plan promised (dropped or refused alike), folders read by `datasets` as the planner resolves
them, and rows materialized as a file-backed dataset named by their content, so the trainer's
tokenization is cached across runs (`materialize`)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from posttrain.data.files import iter_rows, source_files
from posttrain.spec import Source, StageSpec
from stages.lib.data import load_source, load_stage_data, materialize
from tests.conftest import ROOT
from workflows.config import compose
from workflows.planning import build_plan

TINY_TOKENIZER = ROOT / "demo" / "tiny_tokenizer"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Validation results and materialized rows are cached by content; a private cache keeps these tests
    independent (the materialize tests point it at their own folder)."""
    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "posttrain_cache"))


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def chat(question: str, answer: str) -> dict:
    return {"messages": [user(question), assistant(answer)]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def sft_spec(tmp_path: Path, data: dict[str, Any]) -> StageSpec:
    """An sft stage's spec as stage.yaml holds it, with only `data` of interest (no tokenizer)."""
    return StageSpec.from_dict({"name": "sft", "type": "sft", "stage_dir": str(tmp_path / "sft"),
                                "model_dir": str(tmp_path / "sft" / "model"), "seed": 0, "data": data})


# ---------------------------------------------------------------------------------------------
# Mixtures, drops and refusals


def test_the_stage_builds_the_mixture_the_weights_ask_for(tmp_path):
    sources = []
    for name, n in (("a", 60), ("b", 60), ("c", 30)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(chat(f"{name}: {i}", str(i))) + "\n" for i in range(n)))
        sources.append({"path": str(path)})
    sources[0]["weight"], sources[1]["weight"], sources[2]["weight"] = 2.0, 1.0, 1.0
    sources[1]["max_rows"] = 40
    data = {"format": "messages", "sources": sources, "seed": 7, "shuffle": True, "eval_fraction": 0.1,
            "on_invalid": "error"}
    loaded = load_stage_data(sft_spec(tmp_path, data))
    origin = Counter(row["messages"][0]["content"].split(":")[0] for row in loaded.train)
    total = 54 + 36 + 27  # after the 10% eval carve of 60, 40 (capped) and 30 rows
    assert origin == {"a": total // 2 + 1, "b": total // 4, "c": total // 4}  # 2:1:1, largest remainder to a
    assert len(loaded.evaluation) == 6 + 4 + 3
    assert loaded.metrics["data/rows"] == total and loaded.metrics["data/eval_rows"] == 13
    again = load_stage_data(sft_spec(tmp_path, data))
    assert again.train.to_list() == loaded.train.to_list()  # the same rows in the same order


@pytest.fixture
def mostly_good(tmp_path) -> Path:
    rows = [chat(f"copy: {w}", w) for w in ("ab", "cd", "ef", "gh", "ij", "kl")]
    rows[1] = chat("copy: cd", "")  # empty answer
    rows[3] = {"messages": [{"role": "bot", "content": "hi"}]}  # unknown role
    rows.append(chat("copy: ab", "ab"))  # duplicate of row 1
    return write_jsonl(tmp_path / "mostly_good.jsonl", rows)


def test_drop_mode_plans_and_the_stage_drops_the_same_rows(mostly_good):
    plan = build_plan(compose(["+pipeline=sft_dpo", "stages.sft.data.format=messages",
                               f"stages.sft.data.sources.0.path={mostly_good}", "stages.sft.data.eval_sources=[]",
                               "stages.sft.data.on_invalid=drop", "stages.sft.data.shuffle=false"]))
    sft = plan.stage("sft")
    assert sft.notes[0] == "dropping 3 invalid rows (on_invalid: drop)"
    assert any("row 7 (= row 1): exact duplicate" in n for n in sft.notes)
    # The checkpoint stage has not run: count tokens with the tokenizer it would save.
    policy = dataclasses.replace(sft.spec.policy, tokenizer=str(TINY_TOKENIZER))
    loaded = load_stage_data(dataclasses.replace(sft.spec, policy=policy))
    assert loaded.metrics["data/dropped_rows"] == 3 and loaded.metrics["data/rows"] == 4
    kept = [row["messages"][0]["content"] for row in loaded.train]
    assert kept == ["copy: ab", "copy: ef", "copy: ij", "copy: kl"]


def test_the_stage_refuses_invalid_rows_in_error_mode(tmp_path, mostly_good):
    spec = sft_spec(tmp_path, {"format": "messages", "sources": [{"path": str(mostly_good)}], "seed": 0})
    with pytest.raises(SystemExit) as err:
        load_stage_data(spec)
    assert "[sft] data is not valid, found 3 problems" in str(err.value)
    assert "mostly_good.jsonl row 2: 'messages' message 2 (assistant) is empty" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Folders laid out like hub repos


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
    source = Source(path=str(hub_like), name=name, split=split)
    planned = [row for path in source_files(source) for _, row in iter_rows(path)]
    loaded = load_source(source).to_list()
    assert planned == loaded and planned[0]["prompt"].startswith(first)


# ---------------------------------------------------------------------------------------------
# materialize: rows as a file-backed dataset named by their content

ROWS = [{"prompt": f"question {i}", "completion": f" answer {i}"} for i in range(50)]


def lengths(row):
    return {"n": len(row["prompt"]) + len(row["completion"])}


def test_same_rows_same_file_and_the_map_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path))
    first = materialize(ROWS)
    assert list(first) == ROWS
    (data_file,) = [f["filename"] for f in first.cache_files]
    assert data_file.startswith(str(tmp_path / "datasets"))
    mapped = first.map(lengths)
    (map_file,) = [f["filename"] for f in mapped.cache_files]

    again = materialize([dict(r) for r in ROWS])  # equal rows, new objects: the same entry
    assert [f["filename"] for f in again.cache_files] == [data_file]
    assert [f["filename"] for f in again.map(lengths).cache_files] == [map_file]  # read, not recomputed
    assert len(list((tmp_path / "datasets").iterdir())) == 1  # no temporary folder left behind

    other = materialize(ROWS[:-1])
    assert [f["filename"] for f in other.cache_files] != [data_file]
    assert list(other) == ROWS[:-1]


def test_an_unwritable_cache_keeps_the_rows_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(blocker))
    dataset = materialize(ROWS)
    assert list(dataset) == ROWS
    assert dataset.cache_files == []

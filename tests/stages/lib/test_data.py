"""A stage's rows become a file-backed dataset named by their content, so the trainer's
tokenization is cached across runs (stages/data.py `materialize`)."""

from __future__ import annotations

from stages.lib.data import materialize

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

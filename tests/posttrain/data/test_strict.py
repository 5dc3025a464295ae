"""Text and JSON read strictly: invalid UTF-8, NaN/Infinity and repeated keys refused with file and row; a
UTF-8 BOM accepted; compression detected and named, or read when the name declares it."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pytest

from posttrain.data.files import BadRow, SourceError, iter_rows
from workflows.config import compose
from workflows.planning import PlanError, build_plan

GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]})
ROWS = [
    (b'{"text": "caf\xe9"}', "not valid UTF-8 (byte 0xe9 at byte 14 of the row)"),  # Latin-1
    (b'{"text": NaN}', "not valid JSON: NaN is not a JSON value"),
    (b'{"x": [1, {"y": -Infinity}]}', "not valid JSON: -Infinity is not a JSON value"),
    (b'{"text": "a", "text": "b"}', "not valid JSON: key 'text' appears twice in one object"),
    (b'{"messages": [{"role": "user", "role": "assistant", "content": "x"}]}', "not valid JSON: key 'role' appears twice"),
]


def reasons(path: Path) -> dict[int, str]:
    return {n: row.reason if isinstance(row, BadRow) else "ok" for n, row in iter_rows(path)}


def test_rows_are_read_strictly_in_every_format(tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\n" + b"\n".join(raw for raw, _ in ROWS) + b"\n")
    found = reasons(jsonl)
    assert found[1] == "ok"  # the byte-order mark is skipped
    for number, (_, reason) in enumerate(ROWS, 2):
        assert found[number].startswith(reason), (number, found[number])
    array = tmp_path / "rows.json"
    array.write_bytes(b"\xef\xbb\xbf[" + GOOD.encode() + b', {"text": NaN}, {"a": 1, "a": 2}]')
    assert [r[:30] for r in reasons(array).values()] == ["ok", "not valid JSON: NaN is not a J",
                                                        "not valid JSON: key 'a' appear"]
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'[\n{"text": "ok"},\n{"text": "caf\xe9"}]')
    with pytest.raises(SourceError, match=r"latin.json line 3: not valid UTF-8 \(byte 0xe9\)"):
        list(iter_rows(latin))
    table = tmp_path / "rows.csv"
    table.write_bytes(b"\xef\xbb\xbfprompt,completion\nhi,caf\xe9\nok,fine\n")
    assert reasons(table) == {2: "not valid UTF-8 (byte 0xe9 in column 'completion'); re-encode the file as UTF-8",
                              3: "ok"}
    twice = tmp_path / "twice.csv"
    twice.write_text("prompt,prompt\na,b\n")
    with pytest.raises(SourceError, match="column 'prompt' appears twice in the header"):
        list(iter_rows(twice))


def test_compression_is_named_or_read_when_declared(tmp_path):
    data = (GOOD + "\n").encode()
    for name, content, expected in [
        ("gz.jsonl", gzip.compress(data), "is gzip-compressed but named gz.jsonl; rename it to gz.jsonl.gz"),
        ("bz.json", bz2.compress(data), "is bzip2-compressed but named bz.json; rename it to bz.json.bz2"),
        ("zst.jsonl", b"\x28\xb5\x2f\xfd" + data, "is zstd-compressed but named zst.jsonl; decompress it"),
        ("plain.jsonl.gz", data, "is named .gz but is not gzip-compressed"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SourceError, match=expected):
            list(iter_rows(tmp_path / name))
    (tmp_path / "ok.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "ok.jsonl.bz2").write_bytes(bz2.compress(data))
    assert reasons(tmp_path / "ok.jsonl.gz") == reasons(tmp_path / "ok.jsonl.bz2") == {1: "ok"}


def test_the_planner_refuses_them_with_file_and_row(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + ROWS[0][0] + b"\n" + GOOD.replace("ok", "fine").encode() + b"\n")
    with pytest.raises(PlanError) as err:
        build_plan(compose(["+pipeline=sft_dpo", "tracking=none", f"stages.sft.data.sources=[{{path: {path}}}]"]))
    assert any("sft.jsonl row 2: not valid UTF-8 (byte 0xe9" in p for p in err.value.problems), err.value.problems
    gz = tmp_path / "sft.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes().replace(ROWS[0][0] + b"\n", b"")))
    plan = build_plan(compose(["+pipeline=sft_dpo", "tracking=none", f"stages.sft.data.sources=[{{path: {gz}}}]"]))
    assert plan.stage("sft").spec.data.sources[0].path == str(gz)

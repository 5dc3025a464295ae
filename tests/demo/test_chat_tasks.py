"""The chat tasks for a real model (demo/chat_tasks.py): generated, disjoint, checked by a program,
and the shipped files are exactly what the generator writes."""

from __future__ import annotations

import json

from demo.chat_tasks import SEEN_TASKS, TASKS, build, check, norm, write
from tests.conftest import ROOT


def test_the_shipped_files_are_the_generator_output_byte_for_byte(tmp_path):
    write(str(tmp_path), seed=0)
    for path in sorted((ROOT / "data" / "chat_tasks").iterdir()):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_splits_never_share_a_prompt_and_unseen_types_are_held_out_only():
    data = build(0)
    prompts: dict[str, str] = {}
    for split, rows in data.items():
        for row in rows:
            prompt = (row.get("prompt") or row["messages"][:1])[0]["content"]
            assert prompt not in prompts, f"{split} repeats a prompt of {prompts.get(prompt)}"
            prompts[prompt] = split
            if split != "heldout":
                assert row["task"] in SEEN_TASKS
    assert {r["task"] for r in data["heldout"] if not r["seen"]} == {n for n, t in TASKS.items() if not t.seen}


def test_the_checker_accepts_every_answer_and_refuses_every_near_miss():
    data = build(0)
    for row in data["prefs"]:
        prompt, good, bad = row["prompt"][0]["content"], row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert check(row["task"], prompt, good, good) and not check(row["task"], prompt, good, bad), row
    assert check("add", "", "68", " 68. ") and check("uppercase", "", "RIVER", "'RIVER'")
    assert not check("uppercase", "", "RIVER", "River") and norm("The answer is 68.") == "The answer is 68"
    assert json.dumps(build(0)) == json.dumps(build(0)) != json.dumps(build(1))

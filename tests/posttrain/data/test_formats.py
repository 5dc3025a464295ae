"""Formats become the trainer's columns exactly as TRL would make them (posttrain/data/formats.py)."""

from __future__ import annotations

import json

import pytest

from posttrain.data.formats import check_row, target_shape, to_trainer_rows
from posttrain.registry import STAGE_TYPES

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
    ("prompt", {"prompt": [user("add: 2+3")], "answer": 5, "task": "add", "seen": True}, "prompt",
     [{"prompt": [user("add: 2+3")], "answer": "5", "task": "add"}]),
    ("prompt", {"prompt": "Q: copy: ab\nA:"}, "prompt", [{"prompt": "Q: copy: ab\nA:", "answer": None, "task": None}]),
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


def test_a_format_takes_the_shape_the_stage_type_accepts():
    assert target_shape("preference", STAGE_TYPES["dpo"].shapes) == "preference"
    assert target_shape("preference", STAGE_TYPES["kto"].shapes) == "unpaired_preference"
    assert target_shape("alpaca", STAGE_TYPES["sft"].shapes) == "messages"
    assert target_shape("messages", ()) == "messages"  # a stage that takes no data: the format's own shape
    assert "preference" in STAGE_TYPES["kto"].formats and "messages" not in STAGE_TYPES["kto"].formats


def test_last_turn_form_keeps_earlier_turns_as_prompt_and_drops_messages_after_the_last_answer():
    from posttrain.data.formats import last_turn_as_completion, to_common_shape

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"},
                {"role": "assistant", "content": "1"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "2"}, {"role": "user", "content": "thanks"}]
    pair = last_turn_as_completion({"messages": messages})
    assert pair == {"prompt": messages[:4], "completion": [messages[4]]}
    assert to_common_shape({"messages": messages}, ("prompt_completion", True)) == pair
    assert to_common_shape(pair, ("messages", True)) == {"messages": messages[:5]}



def test_prompt_rows_are_checked_and_rl_stages_take_every_prompt_format():
    assert check_row({"prompt": []}, "prompt") == ["'prompt' is empty"]
    assert check_row({"prompt": [user(" ")]}, "prompt") == ["'prompt' message 1 (user) is empty"]
    assert check_row({"prompt": "x", "answer": True}, "prompt") == [
        "'answer' (the reference answer verifiers compare with) must be a string, got a boolean"]
    assert check_row({"prompt": "x", "answer": " "}, "prompt") == ["'answer' is empty; drop the column (no reference) "
                                                                   "or fill it"]
    assert check_row({"question": "x"}, "prompt")[0].startswith("missing column 'prompt'")
    assert check_row({"prompt": "x", "answer": "y"}, "messages")[0].endswith("this looks like prompt data (format: prompt)")
    for kind in ("grpo", "rloo"):
        assert set(STAGE_TYPES[kind].formats) == {"alpaca", "sharegpt", "messages", "prompt_completion", "preference",
                                                  "prompt"}
    assert STAGE_TYPES["reward"].formats == ("preference",)

"""Synthetic data (stages/generate.py) without a model: instructions parsed from a teacher's reply,
near-duplicates of seeds and of earlier instructions dropped, answers verified (by a program or a
judge), repeated (instruction, response) pairs dropped; each test says which texts survive and why
each other one was dropped."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from posttrain.spec import StageSpec
from stages.generate import Candidate, answer, check, parse_instructions, propose
from tests.eval_helpers import StubServer

Messages = list[dict[str, str]]


class ScriptedTeacher:
    """A teacher whose replies come from `reply(request content)`; counts requests like the real ones."""

    def __init__(self, reply: Callable[[str], str | None]):
        self.reply, self.requests, self.errors = reply, 0, 0

    def chat(self, conversations: list[Messages], n: int = 1) -> list[list[str | None]]:
        self.requests += len(conversations)
        return [[self.reply(c[-1]["content"]) for _ in range(n)] for c in conversations]


def fates(candidates: list[Candidate]) -> list[tuple[str, str | None, str | None]]:
    return [(c.instruction, c.response, c.dropped) for c in candidates]


def spec(tmp_path) -> StageSpec:
    return StageSpec(name="generate", type="generate", stage_dir=str(tmp_path), model_dir=str(tmp_path / "dataset"),
                     seed=0)


def test_teacher_instructions_are_parsed_from_task_lines():
    reply = "Sure! Here are tasks:\nTask: reverse: qwer\n2. Task: add: 3+4\n- Instruction 3: copy: zzzz\nthanks"
    assert parse_instructions(reply) == ["reverse: qwer", "add: 3+4", "copy: zzzz"]
    assert parse_instructions("no tasks here") == []


def test_self_instruct_keeps_new_verified_instructions_and_says_why_each_other_was_dropped(tmp_path):
    seeds = ["reverse: abcd", "add: 3+4"]
    settings = {"num_instructions": 12, "instructions_per_request": 4, "examples_per_request": 2,
                "dedup_threshold": 0.8, "ngram": 3, "verifier": {"_target_": "demo.tasks.check_or_solve"}}
    proposals = iter([
        ("Here are tasks:\nTask: Reverse: ABCD!\nTask: reverse: wxyz\n2. Task: reverse: wxya\nnot a task\n"
         "- Instruction 4: copy: qwer\nTask: len: abc"),  # five tasks: only the first four asked for are taken
        "Task: reverse: abce\nTask: upper: abcd\nTask: sort: 4213\nTask: add: 5+6",
        "Sorry, I cannot.",
    ])
    answers = {"reverse: wxyz": "zyxw", "copy: qwer": "qwe", "upper: abcd": "", "sort: 4213": None, "add: 5+6": "11"}
    teacher = ScriptedTeacher(lambda content: next(proposals) if "Write 4 new tasks" in content else answers[content])
    counts: Counter = Counter()
    candidates = propose(teacher, seeds, settings, random.Random(0), counts)
    assert fates(candidates) == [
        ("Reverse: ABCD!", None, "copies_seed"),  # the seed `reverse: abcd` but for case and punctuation
        ("reverse: wxyz", None, None),
        ("reverse: wxya", None, "near_duplicate"),  # of `reverse: wxyz` (9 of 11 shingles), not of a seed
        ("copy: qwer", None, None),
        ("reverse: abce", None, "copies_seed"),  # near the seed `reverse: abcd`
        ("upper: abcd", None, None),
        ("sort: 4213", None, None),
        ("add: 5+6", None, None),  # shares only `add` with the seed `add: 3+4`
    ]
    assert counts["replies_without_tasks"] == 1 and teacher.requests == 3

    answered = answer(teacher, candidates, [[{"role": "user", "content": c.instruction}] for c in candidates], 1)
    check(answered, settings, spec(tmp_path), 0)
    assert teacher.requests == 3 + 5  # only the five live instructions were sent to be answered
    assert fates(answered) == [
        ("Reverse: ABCD!", None, "copies_seed"),
        ("reverse: wxya", None, "near_duplicate"),
        ("reverse: abce", None, "copies_seed"),
        ("reverse: wxyz", "zyxw", None),  # kept: right
        ("copy: qwer", "qwe", "verifier"),  # wrong: the demo verifier solves `copy: qwer` itself
        ("upper: abcd", "", "empty_response"),
        ("sort: 4213", None, "teacher_error"),  # no reply could be had
        ("add: 5+6", "11", None),  # kept: right
    ]


def test_a_judge_decides_instead_of_the_verifier_and_repeated_pairs_are_dropped(tmp_path):
    candidates = [Candidate("reverse: abcd", "dcba", "dcba"),
                  Candidate("reverse: abcd", "dcba", "dcba."),  # the same pair once normalised
                  Candidate("reverse: abcd", "dcba", "abcd"),
                  Candidate("add: 3+4", "7", "7"),  # right, but the scripted judge says no
                  Candidate("copy: ab", "ab", None, dropped="teacher_error")]  # already dropped: not judged
    with StubServer() as server:  # the judge answers yes exactly when `dcba` is in what it is shown
        judge = {"endpoint": server.url, "model": "judge", "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 4,
                 "batch_size": 2, "timeout": 10.0, "max_retries": 0}
        check(candidates, {"judge": judge, "verifier": {"_target_": "demo.tasks.check_or_solve"}}, spec(tmp_path), 0)
    assert fates(candidates) == [
        ("reverse: abcd", "dcba", None),
        ("reverse: abcd", "dcba.", "duplicate"),
        ("reverse: abcd", "abcd", "judge"),
        ("add: 3+4", "7", "judge"),
        ("copy: ab", None, "teacher_error"),
    ]
    assert len(server.requests) == 4 and all(r["model"] == "judge" for r in server.requests)

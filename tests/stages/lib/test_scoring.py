"""The arithmetic of evals, gates, synthetic data and on-policy pairs, on hand-made cases with known answers."""

from __future__ import annotations

import math
import random

import pytest

from stages.lib.dedup import NearDuplicates, jaccard, shingles
from demo.tasks import build, solve
from stages.generate import parse_instructions
from stages.onpolicy import build_pair
from stages.lib.scoring import accuracy_metrics, perplexity_metrics, preference_metrics, side_by_side
from stages.verifiers import demo_check, load_verifier, prompt_and_reference, prompt_text, verify
from posttrain.gates import judge


# ------------------------------------------------------------------------------------------ verifiers


def test_demo_checker_accepts_right_answers_and_refuses_near_misses():
    check = load_verifier({"_target_": "demo.tasks.check"})
    assert verify(check, "reverse", "reverse: abcd", "dcba", " dcba ")
    assert not verify(check, "reverse", "reverse: abcd", "dcba", "dcab")
    assert verify(check, "add", "add: 27+19", "46", "46")
    assert not verify(check, "add", "add: 27+19", "46", "45")


def test_demo_check_solves_prompts_without_a_reference():
    assert demo_check(None, "reverse: abcd", None, "dcba")
    assert not demo_check(None, "reverse: abcd", None, "abcd")
    assert not demo_check(None, "translate: bonjour", None, "hello")  # no demo task answers it
    assert not demo_check(None, "add: 3+4+5", None, "12")  # malformed for the add task
    assert solve("add: 3+4") == "7" and solve("sort: 4213") == "1234" and solve("foo: bar") is None


def test_demo_solver_agrees_with_every_generated_answer():
    heldout = build(0)["heldout"]
    assert all(solve(r["prompt"][0]["content"]) == r["answer"] for r in heldout)


def test_user_checker_gets_its_keyword_arguments_and_errors_count_as_wrong(tmp_path, monkeypatch):
    (tmp_path / "my_checks.py").write_text(
        "def within(task, prompt, answer, output, tolerance):\n"
        "    return abs(float(output) - float(answer)) <= tolerance\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check = load_verifier({"_target_": "my_checks.within", "tolerance": 0.5})
    assert verify(check, None, "pi?", "3.14", "3.5")
    assert not verify(check, None, "pi?", "3.14", "4")
    assert not verify(check, None, "pi?", "3.14", "three")  # the checker raises: a wrong answer
    with pytest.raises(SystemExit, match="cannot import"):
        load_verifier({"_target_": "my_checks.nope"})


def test_prompt_and_reference_of_every_trainer_shape():
    user = [{"role": "user", "content": "copy: abcd"}]
    answer = [{"role": "assistant", "content": "abcd"}]
    assert prompt_and_reference({"messages": user + answer}) == (user, "abcd")
    assert prompt_and_reference({"prompt": user, "chosen": answer, "rejected": answer}) == (user, "abcd")
    assert prompt_and_reference({"prompt": "copy: abcd", "completion": "abcd"}) == (user, "abcd")
    assert prompt_and_reference({"messages": user}) == (user, None)
    assert prompt_text(user + answer + [{"role": "user", "content": "again"}]) == "again"


# ------------------------------------------------------------------------------------------ metrics


def test_accuracy_overall_per_task_and_seen_vs_unseen():
    rows = [("copy", True, True), ("copy", True, False), ("add", True, True), ("add", True, True),
            ("min", False, False), ("min", False, True), ("lower", False, False), ("other", None, True)]
    m = accuracy_metrics(rows)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["accuracy_seen"] == pytest.approx(3 / 4)
    assert m["accuracy_unseen"] == pytest.approx(1 / 3)  # the row without `seen` counts in neither
    assert m["accuracy/copy"] == 0.5 and m["accuracy/add"] == 1.0 and m["accuracy/lower"] == 0.0
    assert "accuracy_unseen" not in accuracy_metrics([("copy", True, True)])  # no unseen rows: not a 0
    assert accuracy_metrics([]) == {}


def test_preference_accuracy_from_log_probabilities():
    chosen = [-1.0, -2.0, -3.0, -4.0]
    rejected = [-2.0, -1.0, -3.0, -5.0]  # margins +1, -1, 0 (a tie is no preference), +1
    m = preference_metrics(chosen, rejected)
    assert m["pref_accuracy"] == 0.5
    assert m["pref_margin"] == pytest.approx(0.25)
    assert "reward_accuracy" not in m


def test_reward_accuracy_is_relative_to_the_reference():
    # The reference already preferred pair 0 by 3 nats; the policy by only 1: its implicit reward fell.
    chosen, rejected = [-1.0, -2.0, -6.0], [-2.0, -4.0, -5.0]
    ref_chosen, ref_rejected = [-1.0, -3.0, -7.0], [-4.0, -4.0, -5.0]
    m = preference_metrics(chosen, rejected, ref_chosen, ref_rejected)
    # margins 1, 2, -1; reference margins 3, 1, -2; rewards -2, +1, +1
    assert m["pref_accuracy"] == pytest.approx(2 / 3)
    assert m["reward_accuracy"] == pytest.approx(2 / 3)
    assert m["reward_margin"] == pytest.approx(0.0)
    same = preference_metrics(chosen, rejected, chosen, rejected)  # the policy is its own reference
    assert same["reward_accuracy"] == 0.0 and same["reward_margin"] == 0.0
    with pytest.raises(ValueError):
        preference_metrics([1.0], [1.0, 2.0])


def test_perplexity_is_per_token_over_all_responses():
    m = perplexity_metrics([2.0, 4.0], [1, 3])  # 6 nats over 4 tokens
    assert m["nll"] == pytest.approx(1.5)
    assert m["ppl"] == pytest.approx(math.exp(1.5))
    assert perplexity_metrics([], []) == {}


def test_side_by_side_tables_one_row_per_model_then_per_task():
    table = side_by_side({"checkpoint": {"accuracy": 0.0, "ppl": 300.0},
                          "sft": {"accuracy": 0.61, "pref_accuracy": 0.7, "accuracy/copy": 0.9, "ppl": 1.9}},
                         {"copy": True, "add": True, "min": False})
    models, tasks = table.split("\n\n")
    lines = models.splitlines()
    assert lines[0].split() == ["model", "accuracy", "pref_accuracy", "ppl"]
    assert lines[1].split() == ["checkpoint", "0.000", "-", "300"]
    assert lines[2].split() == ["sft", "0.610", "0.700", "1.9"]
    assert [line.split() for line in tasks.splitlines()] == [["task", "accuracy", "checkpoint", "sft"],
                                                             ["copy", "(seen)", "-", "0.900"]]


# ------------------------------------------------------------------------------------------ gates


def test_gate_verdicts_and_reasons():
    gate = {"metric": "sft_eval/sft/accuracy", "stage": "sft_eval", "key": "sft/accuracy", "min": 0.5, "max": None}
    failed = judge(gate, {"sft/accuracy": 0.31})
    assert not failed.passed and failed.reason == "gate sft_eval/sft/accuracy=0.31 < min 0.5"
    assert judge(gate, {"sft/accuracy": 0.5}).passed
    missing = judge(gate, {"sft/ppl": 2.0})
    assert not missing.passed and "did not report 'sft/accuracy'" in missing.reason and "sft/ppl" in missing.reason
    upper = judge({**gate, "min": None, "max": 3.0, "key": "sft/ppl", "metric": "sft_eval/sft/ppl"}, {"sft/ppl": 4.0})
    assert upper.reason == "gate sft_eval/sft/ppl=4 > max 3"
    assert not judge(gate, {"sft/accuracy": float("nan")}).passed


# ------------------------------------------------------------------------------------------ synthetic data


def test_near_duplicates_exact_and_fuzzy():
    index = NearDuplicates(threshold=0.8)
    assert index.add("reverse: abcd") is None
    assert index.add("Reverse:  ABCD!") == ("duplicate", 0)  # case, spaces, punctuation
    assert index.add("reverse: abce") == ("near_duplicate", 0)  # 9 of 11 shingles shared
    assert index.add("reverse: wxyz") is None
    assert index.add("add: 3+4") is None
    assert jaccard(shingles("reverse: abce"), shingles("reverse: abcd")) == pytest.approx(9 / 11)
    loose = NearDuplicates(threshold=0.3)  # below the LSH range: compared with every text
    loose.add("reverse: abcd")
    assert loose.add("reverse: wxyz") == ("near_duplicate", 0)
    only_exact = NearDuplicates(threshold=1.0)
    only_exact.add("reverse: abcd")
    assert only_exact.add("reverse: abce") is None


def test_near_duplicates_scale_without_missing_pairs():
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(40)) for _ in range(300)]
    index = NearDuplicates(threshold=0.8)
    for w in words:
        index.add(w)
    hits = [index.find(w[:-1] + ("x" if w[-1] != "x" else "y")) for w in words]  # one character changed
    assert all(h is not None for h in hits)


def test_teacher_instructions_are_parsed_from_task_lines():
    reply = "Sure! Here are tasks:\nTask: reverse: qwer\n2. Task: add: 3+4\n- Instruction 3: copy: zzzz\nthanks"
    assert parse_instructions(reply) == ["reverse: qwer", "add: 3+4", "copy: zzzz"]
    assert parse_instructions("no tasks here") == []


# ------------------------------------------------------------------------------------------ on-policy pairs


def test_onpolicy_pair_from_own_samples():
    rng = random.Random(0)
    pair, outcome, kto = build_pair(["dcba", "dcab", "dcba"], [True, False, True], "dcba", True, rng)
    assert pair == ("dcba", "dcab") and outcome == "sampled"
    assert kto == [("dcba", True), ("dcab", False)]  # distinct samples, labelled by the verifier


def test_onpolicy_falls_back_to_the_reference_or_skips():
    rng = random.Random(0)
    pair, outcome, kto = build_pair(["x", "y"], [False, False], "dcba", True, rng)
    assert outcome == "reference" and pair[0] == "dcba" and pair[1] in ("x", "y") and ("dcba", True) in kto
    assert build_pair(["x", "y"], [False, False], "dcba", False, rng)[:2] == (None, "none_correct")
    assert build_pair(["x"], [False], None, True, rng)[:2] == (None, "none_correct")
    assert build_pair(["dcba", "dcba"], [True, True], "dcba", True, rng)[:2] == (None, "all_correct")

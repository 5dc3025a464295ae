"""The arithmetic of evals (stages/lib/scoring.py) on hand-made cases with known answers: accuracy
overall, per task and seen vs unseen, preference and reward accuracy, perplexity, the side-by-side table."""

from __future__ import annotations

import math

import pytest

from stages.lib.scoring import accuracy_metrics, perplexity_metrics, preference_metrics, side_by_side


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

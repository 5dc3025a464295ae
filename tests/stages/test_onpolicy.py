"""On-policy pairs (stages/onpolicy.py `build_pair`): chosen and rejected from the policy's own
samples, the reference answer as a fallback, or no pair."""

from __future__ import annotations

import random

from stages.onpolicy import build_pair


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

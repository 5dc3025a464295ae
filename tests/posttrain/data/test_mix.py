"""Mixtures have the proportions their weights say, caps and eval splits hold (posttrain/data/mix.py)."""

from __future__ import annotations

from collections import Counter

from posttrain.data.mix import plan_mixture, weighted_counts


def test_weights_share_out_the_total():
    assert weighted_counts([100, 100], [3.0, 1.0]) == [150, 50]
    assert weighted_counts([100, 100], [None, None]) == [100, 100]  # no weights: plain concatenation
    assert weighted_counts([60, 30, 10], [1.0, None, 2.0]) == [25, 25, 50]  # unset = 1.0
    assert sum(weighted_counts([7, 11, 13], [1.0, 1.0, 1.0])) == 31  # rounding keeps the total


def test_mixture_proportions_repeats_caps_and_eval_split():
    mixture = plan_mixture([100, 100], [3.0, 1.0], [None, None], seed=1)
    per_source = Counter(i for i, _ in mixture.train)
    assert per_source == {0: 150, 1: 50}
    repeats = Counter(j for i, j in mixture.train if i == 0)
    assert set(repeats.values()) == {1, 2}  # every row once, half of them twice: never three times
    assert len({j for i, j in mixture.train if i == 1}) == 50  # subsampled without replacement
    assert plan_mixture([100, 100], [3.0, 1.0], [None, None], seed=1) == mixture  # deterministic
    assert plan_mixture([100, 100], [3.0, 1.0], [None, None], seed=2).train != mixture.train

    capped = plan_mixture([1000, 10], [None, None], [100, None], seed=0, eval_fraction=0.1)
    assert Counter(i for i, _ in capped.train) == {0: 90, 1: 9}
    assert Counter(i for i, _ in capped.evaluation) == {0: 10, 1: 1}
    assert not set(capped.train) & set(capped.evaluation)  # an eval row is never trained on

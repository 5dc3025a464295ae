"""Exact and near-duplicate detection (stages/lib/dedup.py): which texts the index keeps, which it
refuses, and the earlier text each refused one repeats."""

from __future__ import annotations

import random

import pytest

from stages.lib.dedup import NearDuplicates, jaccard, normalize, shingles


def test_near_duplicates_exact_and_fuzzy():
    index = NearDuplicates(threshold=0.8)
    assert index.add("reverse: abcd") is None
    assert index.add("Reverse:  ABCD!") == ("duplicate", 0)  # case, spaces, punctuation
    assert index.add("reverse: abce") == ("near_duplicate", 0)  # 9 of 11 shingles shared
    assert index.add("reverse: wxyz") is None
    assert index.add("add: 3+4") is None
    # Kept, in order (the refused texts are not indexed): the earlier text each later one is compared with.
    assert list(index.exact) == [normalize(t) for t in ("reverse: abcd", "reverse: wxyz", "add: 3+4")]
    assert index.find("reverse: wxya") == ("near_duplicate", 1)  # of `reverse: wxyz`, not of `reverse: abcd`
    assert index.find("ADD: 3+4") == ("duplicate", 2)
    assert jaccard(shingles("reverse: abce"), shingles("reverse: abcd")) == pytest.approx(9 / 11)
    loose = NearDuplicates(threshold=0.3)  # below the LSH range: compared with every text
    loose.add("reverse: abcd")
    assert loose.add("reverse: wxyz") == ("near_duplicate", 0)
    only_exact = NearDuplicates(threshold=1.0)
    only_exact.add("reverse: abcd")
    assert only_exact.add("reverse: abce") is None
    assert only_exact.add("REVERSE: abcd") == ("duplicate", 0)


def test_near_duplicates_scale_without_missing_pairs():
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(40)) for _ in range(300)]
    index = NearDuplicates(threshold=0.8)
    assert [index.add(w) for w in words] == [None] * len(words)  # distinct random words: all kept
    hits = [index.find(w[:-1] + ("x" if w[-1] != "x" else "y")) for w in words]  # one character changed
    # Each variant is found as a near-duplicate of the very word it was made from, not of any other.
    assert hits == [("near_duplicate", i) for i in range(len(words))]

"""Exact and near-duplicate detection for synthetic data. Stdlib only.

Texts are normalised (case, whitespace, punctuation) and compared as sets of character n-grams
(shingles): two texts are near-duplicates when their Jaccard similarity reaches `threshold`.
MinHash signatures split in bands (locality-sensitive hashing) propose candidate pairs, and the
exact Jaccard of each candidate decides, so the cost grows with the number of texts, not its
square; below a threshold of 0.5 every pair is compared instead.
"""

from __future__ import annotations

import hashlib
import random
import re
import struct

_PUNCT = re.compile(r"[^\w\s]")
_PRIME = (1 << 61) - 1
NUM_HASHES = 64
BANDS = 16  # 16 bands of 4 rows: pairs above ~0.5 Jaccard collide in some band with high probability
LSH_MIN_THRESHOLD = 0.5  # below it, every indexed text is compared (exact, slower)


def normalize(text: str) -> str:
    """Lowercase, punctuation dropped, whitespace collapsed: the text two duplicates share."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """Character n-grams of the normalised text (the whole text when shorter than n)."""
    text = normalize(text)
    if len(text) <= n:
        return frozenset([text])
    return frozenset(text[i:i + n] for i in range(len(text) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hash(shingle: str) -> int:
    return struct.unpack("<Q", hashlib.blake2b(shingle.encode(), digest_size=8).digest())[0]


class NearDuplicates:
    """An index of the texts kept so far; `add` says whether a new text is a duplicate of one of them."""

    def __init__(self, threshold: float, n: int = 3, seed: int = 0):
        self.threshold, self.n = threshold, n
        rng = random.Random(seed)
        self.params = [(rng.randrange(1, _PRIME), rng.randrange(0, _PRIME)) for _ in range(NUM_HASHES)]
        self.exact: dict[str, int] = {}
        self.sets: list[frozenset[str]] = []
        self.buckets: dict[tuple[int, tuple[int, ...]], list[int]] = {}

    def _signature(self, grams: frozenset[str]) -> list[int]:
        hashes = [_hash(g) for g in grams]
        return [min((a * h + b) % _PRIME for h in hashes) for a, b in self.params]

    def find(self, text: str) -> tuple[str, int] | None:
        """('duplicate' | 'near_duplicate', index of the earlier text) or None for a new text."""
        key = normalize(text)
        if key in self.exact:
            return "duplicate", self.exact[key]
        if self.threshold >= 1:
            return None
        grams = shingles(text, self.n)
        rows = NUM_HASHES // BANDS
        signature = self._signature(grams)
        if self.threshold < LSH_MIN_THRESHOLD:  # banding would miss such loose matches: compare with all
            candidates = set(range(len(self.sets)))
        else:
            candidates = {i for band in range(BANDS)
                          for i in self.buckets.get((band, tuple(signature[band * rows:(band + 1) * rows])), [])}
        for i in sorted(candidates):
            if jaccard(grams, self.sets[i]) >= self.threshold:
                return "near_duplicate", i
        return None

    def add(self, text: str) -> tuple[str, int] | None:
        """Index `text` unless it duplicates an indexed one; returns what `find` returned."""
        found = self.find(text)
        if found is not None:
            return found
        index = len(self.sets)
        key = normalize(text)
        self.exact[key] = index
        grams = shingles(text, self.n)
        self.sets.append(grams)
        if self.threshold < 1:
            rows = NUM_HASHES // BANDS
            signature = self._signature(grams)
            for band in range(BANDS):
                self.buckets.setdefault((band, tuple(signature[band * rows:(band + 1) * rows])), []).append(index)
        return None

"""Exact and near-duplicate detection for synthetic data.

Texts are normalised (case, whitespace, punctuation) and compared as sets of character n-grams
(shingles): two texts are near-duplicates when their Jaccard similarity reaches `threshold`.
datasketch's MinHash LSH proposes candidate pairs and the exact Jaccard of each candidate decides,
so the cost grows with the number of texts, not its square; below a threshold of 0.5 every pair
is compared instead.
"""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH

_PUNCT = re.compile(r"[^\w\s]")
NUM_PERM = 64  # MinHash permutations, in BANDS bands of NUM_PERM // BANDS rows
BANDS = 16  # 16 bands of 4 rows: pairs above ~0.5 Jaccard collide in some band with high probability
# (recall first: datasketch's own choice for a threshold balances false negatives against false
# positives, but a missed near-duplicate stays in the data, while a false candidate costs one Jaccard)
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


class NearDuplicates:
    """An index of the texts kept so far; `add` says whether a new text is a duplicate of one of them."""

    def __init__(self, threshold: float, n: int = 3, seed: int = 0):
        self.threshold, self.n, self.seed = threshold, n, seed
        self.exact: dict[str, int] = {}
        self.sets: list[frozenset[str]] = []
        # Below LSH_MIN_THRESHOLD banding would miss loose matches (every text is compared instead);
        # at 1 only exact duplicates count.
        self.lsh = (MinHashLSH(num_perm=NUM_PERM, params=(BANDS, NUM_PERM // BANDS))
                    if LSH_MIN_THRESHOLD <= threshold < 1 else None)

    def _minhash(self, grams: frozenset[str]) -> MinHash:
        signature = MinHash(num_perm=NUM_PERM, seed=self.seed)
        signature.update_batch([g.encode() for g in sorted(grams)])
        return signature

    def find(self, text: str) -> tuple[str, int] | None:
        """('duplicate' | 'near_duplicate', index of the earlier text) or None for a new text."""
        key = normalize(text)
        if key in self.exact:
            return "duplicate", self.exact[key]
        if self.threshold >= 1:
            return None
        grams = shingles(text, self.n)
        candidates = range(len(self.sets)) if self.lsh is None else sorted(self.lsh.query(self._minhash(grams)))
        for i in candidates:
            if jaccard(grams, self.sets[i]) >= self.threshold:  # LSH proposes, the exact Jaccard decides
                return "near_duplicate", i
        return None

    def add(self, text: str) -> tuple[str, int] | None:
        """Index `text` unless it duplicates an indexed one; returns what `find` returned."""
        found = self.find(text)
        if found is not None:
            return found
        index = len(self.sets)
        self.exact[normalize(text)] = index
        grams = shingles(text, self.n)
        self.sets.append(grams)
        if self.lsh is not None:
            self.lsh.insert(index, self._minhash(grams))
        return None

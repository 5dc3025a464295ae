"""Mixtures: which rows of which source a stage trains and evaluates on, as pure, seeded arithmetic
(per source: `max_rows` cap, then the `eval_fraction` carve-out, then `weight`s share the training
rows out; README.md, "Mixtures"). The planner reports the counts; the stage takes the same rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Mixture:
    train: list[tuple[int, int]]  # (source index, row index within the source's valid rows)
    evaluation: list[tuple[int, int]]
    counts: list[int]  # training rows per source, repeats included


def _rng(seed: int, *parts: object) -> random.Random:
    # str seeds hash with sha512 (not PYTHONHASHSEED): the same rows every run.
    return random.Random(":".join(map(str, (seed, *parts))))


def weighted_counts(sizes: list[int], weights: list[float | None]) -> list[int]:
    """Rows per source for a total of sum(sizes) shared by `weights` (None everywhere = sizes)."""
    if all(w is None for w in weights):
        return list(sizes)
    shares = [1.0 if w is None else float(w) for w in weights]
    shares = [s if size > 0 else 0.0 for s, size in zip(shares, sizes)]  # an empty source gets nothing
    total, norm = sum(sizes), sum(shares)
    if norm <= 0:
        return [0] * len(sizes)
    exact = [total * s / norm for s in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _take(indices: list[int], count: int, rng: random.Random) -> list[int]:
    if not indices:
        return []
    passes, rest = divmod(count, len(indices))
    return indices * passes + sorted(rng.sample(indices, rest))


def plan_mixture(sizes: list[int], weights: list[float | None], caps: list[int | None], seed: int,
                 shuffle: bool = True, eval_fraction: float = 0.0) -> Mixture:
    """The training and evaluation rows of a mixture of sources with `sizes` valid rows each."""
    train_parts: list[list[int]] = []
    evaluation: list[tuple[int, int]] = []
    for i, (size, cap) in enumerate(zip(sizes, caps)):
        rows = list(range(size))
        if cap is not None and size > cap:
            rows = sorted(_rng(seed, "cap", i).sample(rows, cap))
        if eval_fraction > 0 and len(rows) > 1:
            held = set(_rng(seed, "eval", i).sample(rows, min(len(rows) - 1, round(len(rows) * eval_fraction))))
            evaluation += [(i, r) for r in rows if r in held]
            rows = [r for r in rows if r not in held]
        train_parts.append(rows)
    counts = weighted_counts([len(p) for p in train_parts], weights)
    train = [(i, r) for i, part in enumerate(train_parts) for r in _take(part, counts[i], _rng(seed, "weight", i))]
    if shuffle:
        _rng(seed, "shuffle").shuffle(train)
    return Mixture(train, evaluation, counts)

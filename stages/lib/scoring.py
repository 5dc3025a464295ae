"""The arithmetic of an eval, apart from any model: accuracies, preference accuracy, perplexity,
and the side-by-side table. Stdlib only, so it is tested on hand-made numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Columns of the side-by-side table, in order (absent ones are left out).
TABLE_METRICS = ("accuracy", "accuracy_seen", "accuracy_unseen", "pref_accuracy", "reward_accuracy", "ppl")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def accuracy_metrics(rows: Sequence[tuple[str | None, bool | None, bool]]) -> dict[str, float]:
    """Task accuracy from one (task, seen, correct) per held-out row.

    `accuracy` over all rows, `accuracy/<task>` per task type, `accuracy_seen` / `accuracy_unseen`
    over the rows whose task type was / was not in the training data (rows without `seen` count
    in neither). A group with no rows is left out rather than reported as 0.
    """
    if not rows:
        return {}
    out = {"accuracy": _mean([float(ok) for _, _, ok in rows])}
    for flag, key in ((True, "accuracy_seen"), (False, "accuracy_unseen")):
        group = [float(ok) for _, seen, ok in rows if seen is flag]
        if group:
            out[key] = _mean(group)
    for task in sorted({t for t, _, _ in rows if t}):
        out[f"accuracy/{task}"] = _mean([float(ok) for t, _, ok in rows if t == task])
    return out


def preference_metrics(chosen: Sequence[float], rejected: Sequence[float],
                       reference_chosen: Sequence[float] | None = None,
                       reference_rejected: Sequence[float] | None = None) -> dict[str, float]:
    """How often a model prefers `chosen`, from summed response log-probabilities per pair.

    `pref_accuracy`: fraction of pairs with log p(chosen) - log p(rejected) > 0 (a tie is not a
    preference), `pref_margin` the mean of that difference. With a reference model (the frozen
    model a DPO/KTO stage was trained against), DPO's implicit reward
    (log p(c) - log p_ref(c)) - (log p(r) - log p_ref(r)) gives `reward_accuracy` (> 0) and
    `reward_margin`: whether training moved the model towards `chosen`, whatever the reference
    already preferred.
    """
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen but {len(rejected)} rejected log-probabilities")
    if not chosen:
        return {}
    margins = [c - r for c, r in zip(chosen, rejected)]
    out = {"pref_accuracy": _mean([float(m > 0) for m in margins]), "pref_margin": _mean(margins)}
    if reference_chosen is not None and reference_rejected is not None:
        if not len(reference_chosen) == len(reference_rejected) == len(chosen):
            raise ValueError("the reference's log-probabilities do not match the pairs")
        rewards = [m - (rc - rr) for m, rc, rr in zip(margins, reference_chosen, reference_rejected)]
        out["reward_accuracy"] = _mean([float(r > 0) for r in rewards])
        out["reward_margin"] = _mean(rewards)
    return out


def perplexity_metrics(nll_sums: Sequence[float], token_counts: Sequence[int]) -> dict[str, float]:
    """Mean negative log-likelihood per response token over all responses (`nll`) and exp of it (`ppl`)."""
    tokens = sum(token_counts)
    if not tokens:
        return {}
    nll = sum(nll_sums) / tokens
    return {"nll": nll, "ppl": math.exp(min(nll, 700.0))}  # exp overflows past ~709


def side_by_side(metrics: dict[str, dict[str, float]], tasks: dict[str, bool | None] | None = None) -> str:
    """Plain-text tables: one row per model (headline metrics), then one row per task type with a
    column per model (task accuracy; `tasks` maps each task to whether training saw it)."""
    columns = [k for k in TABLE_METRICS if any(k in m for m in metrics.values())]
    out = _table(["model", *columns], [[model, *(_cell(c, v.get(c)) for c in columns)] for model, v in metrics.items()])
    rows = [[task + {True: " (seen)", False: " (unseen)"}.get(seen, ""),
             *(_cell("accuracy", v.get(f"accuracy/{task}")) for v in metrics.values())]
            for task, seen in (tasks or {}).items() if any(f"accuracy/{task}" in v for v in metrics.values())]
    if rows:
        out += "\n\n" + _table(["task accuracy", *metrics], rows)
    return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                     .rstrip() for r in rows)


def _cell(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if column == "ppl" else f"{value:.3f}"

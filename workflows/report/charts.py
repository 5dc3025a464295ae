"""The report's charts (matplotlib, drawn off-screen), each returned as a `data:image/png` URI so the
page needs no other file. Curves are read generically from a stage's logged history: any key
with `loss`, `accuracies`, `margins`, `reward` or `kl` in it gets drawn, whichever trainer logged it
(SFT, DPO, KTO, GRPO ...).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

DPI = 90
# (panel title, which history keys it draws), in page order; a key goes to the first panel that takes it.
PANELS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("loss", lambda k: k.endswith("loss") and k not in ("train_loss",)),
    ("reward accuracy", lambda k: "accuracies" in k),
    ("reward margin", lambda k: "margins" in k),
    ("rewards", lambda k: "reward" in k),
    ("KL", lambda k: k == "kl" or k.endswith("_kl") or k.endswith("/kl")),
    ("learning rate", lambda k: k == "learning_rate"),
)
RATES = ("accuracy", "accuracy_seen", "accuracy_unseen", "pref_accuracy", "reward_accuracy")  # in [0, 1]


def _pyplot() -> Any:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its INFO lines would land in the run's log
    matplotlib.use("Agg")  # no display: draw into memory
    import matplotlib.pyplot as plt

    return plt


def _uri(fig: Any) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _margins(fig: Any, left: float = 0.7, right: float = 0.2, top: float = 0.4, bottom: float = 0.55,
             wspace: float = 0.3, hspace: float = 0.65) -> None:
    """Fixed margins in inches: tight_layout (or a "tight" bounding box) draws the figure once more to
    measure it, which is half the cost of a chart."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=wspace, hspace=hspace)


def series(history: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """key -> (steps, values) over the entries that logged it."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for entry in history:
        for key, value in entry.items():
            if key not in ("step", "time", "epoch") and isinstance(value, (int, float)):
                steps, values = out.setdefault(key, ([], []))
                steps.append(int(entry["step"]))
                values.append(float(value))
    return out


def panels(history: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(title, keys) of every panel the history has data for (`train_loss`, the run's mean, is not a curve)."""
    curves = series(history)
    taken: dict[str, list[str]] = {}
    for key in sorted(curves):
        for title, wanted in PANELS:
            if wanted(key):
                taken.setdefault(title, []).append(key)
                break
    return [(title, taken[title]) for title, _ in PANELS if title in taken]


def training_curves(history: list[dict[str, Any]]) -> str | None:
    """One figure of a stage's panels side by side (None: nothing to draw)."""
    found = panels(history)
    if not found:
        return None
    plt = _pyplot()
    curves = series(history)
    columns = min(3, len(found))
    rows = (len(found) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.0 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, found):
        train = [k for k in keys if not k.startswith("eval_")]
        colors = {k: f"C{i}" for i, k in enumerate(train)}
        for i, key in enumerate(train + [k for k in keys if k.startswith("eval_")]):
            steps, values = curves[key]
            held_out = key.startswith("eval_")  # dashed, in the colour of the training curve it matches
            color = colors.get(key.removeprefix("eval_"), f"C{(len(train) + i) % 10}") if held_out else colors[key]
            ax.plot(steps, values, color=color, linestyle="--" if held_out else "-",
                    marker="o" if held_out or len(steps) < 12 else None, markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(found):]:
        ax.axis("off")
    _margins(fig)
    return _uri(fig)


def loss_across_stages(histories: dict[str, list[dict[str, Any]]]) -> str | None:
    """Every training stage's loss on one axis, one after another in pipeline order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    offset, drawn = 0, False
    for name, history in histories.items():
        steps, values = series(history).get("loss", ([], []))
        if steps:
            ax.plot([offset + s for s in steps], values, label=name)
            ax.axvline(offset, color="#999", linewidth=0.6)
            offset += max(steps)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step (stages in pipeline order)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _margins(fig)
    return _uri(fig)


def _grouped_bars(ax: Any, groups: list[str], by_model: dict[str, list[float | None]]) -> None:
    width = 0.8 / max(len(by_model), 1)
    for i, (model, values) in enumerate(by_model.items()):
        xs = [g + (i - (len(by_model) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=model)
        for bar, value in zip(bars, values):
            if value is not None:
                ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=6)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def model_bars(metrics: dict[str, dict[str, float]]) -> str | None:
    """The headline rates of every model side by side (plus perplexity, on its own axis)."""
    rates = [k for k in RATES if any(k in m for m in metrics.values())]
    has_ppl = any("ppl" in m for m in metrics.values())
    if not rates and not has_ppl:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if has_ppl and rates else 1, figsize=(10 if has_ppl and rates else 7, 3.4),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 1]} if has_ppl and rates else None)
    if rates:
        ax = axes[0][0]
        _grouped_bars(ax, rates, {model: [m.get(k) for k in rates] for model, m in metrics.items()})
        ax.set_ylim(0, 1.1)
        ax.set_title("per model")
        ax.legend(fontsize=8)
    if has_ppl:
        ax = axes[0][-1]
        colors = [f"C{i}" for i in range(len(metrics))]  # each model in its colour of the bars beside
        ax.bar(list(metrics), [m.get("ppl", 0.0) for m in metrics.values()], color=colors)
        ax.set_yscale("log")
        ax.set_title("perplexity (lower is better)")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    _margins(fig, bottom=0.85, wspace=0.25)
    return _uri(fig)


def task_bars(metrics: dict[str, dict[str, float]], seen: dict[str, bool | None]) -> str | None:
    """Accuracy per task type and model, task types the training data had (seen) apart from the others."""
    tasks = sorted({k.removeprefix("accuracy/") for m in metrics.values() for k in m if k.startswith("accuracy/")})
    if not tasks:
        return None
    groups = [(label, [t for t in tasks if seen.get(t) is flag]) for label, flag in
              (("seen task types", True), ("unseen task types (zero-shot)", False), ("task types", None))]
    groups = [(label, group) for label, group in groups if group]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(max(5.0, 1.0 * len(tasks) + 3), 3.4), squeeze=False,
                             gridspec_kw={"width_ratios": [len(g) for _, g in groups]})
    for ax, (label, group) in zip(axes[0], groups):
        _grouped_bars(ax, group, {model: [m.get(f"accuracy/{t}") for t in group] for model, m in metrics.items()})
        ax.set_ylim(0, 1.1)
        ax.set_title(label)
    axes[0][0].set_ylabel("task accuracy")
    axes[0][-1].legend(fontsize=8)
    _margins(fig, bottom=0.85, wspace=0.25)
    return _uri(fig)

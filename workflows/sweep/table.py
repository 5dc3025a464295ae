"""The sweep table: the variants side by side, one column each, one row per swept key and metric.

Rows are the stages the variants do not share (their outputs differ) and their final metrics worth
comparing (losses, accuracies, rewards, KL, perplexity; everything is in sweep.json), and which
stages each variant trained or reused.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from posttrain.artifacts import SUMMARY
from posttrain.jsonio import read_json, write_json
from posttrain.status import DONE
from workflows.sweep.variant import SWEEP_TAG, Sweep, Variant

COMPARED = ("loss", "accuracy", "accuracies", "reward", "kl", "margin", "ppl")  # words of a metric worth a row
MAX_DEPTH = 1  # `rewards/accuracies` yes, `dpo/accuracy/reverse` (per task type) only in sweep.json


def _stages(variant: Variant) -> dict[str, dict[str, Any]]:
    summary = read_json(Path(variant.run_dir) / SUMMARY) or {}
    return {s["name"]: s for s in summary.get("stages", [])}


def _status(variant: Variant, stages: dict[str, dict[str, Any]]) -> str:
    if not stages:
        return f"not run (exit code {variant.exit_code})" if variant.exit_code else "not run"
    bad = [n for n, s in stages.items() if s["status"] not in DONE]
    if not bad:
        return "completed"
    return ", ".join(f"{n} {stages[n]['status']}" for n in bad)


def _worth_a_row(key: str, value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and key.count("/") <= MAX_DEPTH
            and any(word in key for word in COMPARED))


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build(sweep: Sweep) -> dict[str, Any]:
    """sweep.json's content: every variant's stages (status, output, metrics) and what they share."""
    variants = [(v, _stages(v)) for v in sweep.variants]
    outputs: dict[str, set[str]] = {}
    for _, stages in variants:
        for name, stage in stages.items():
            outputs.setdefault(name, set()).add(stage["output_dir"])
    ran = [stages for _, stages in variants if stages]
    shared = sorted(n for n, dirs in outputs.items() if len(dirs) == 1 and len(ran) > 1
                    and all(n in s for s in ran))
    return {"sweep": sweep.id, "dir": str(sweep.dir), "swept": sweep.swept, "written_at": time.time(),
            "shared": shared, "variants": [
                {"number": v.number, "overrides": v.overrides, "pipeline": v.pipeline, "run_dir": v.run_dir,
                 "exit_code": v.exit_code, "status": _status(v, stages), "stages": stages} for v, stages in variants]}


def rows(data: dict[str, Any]) -> list[list[str]]:
    variants = data["variants"]
    out = [["variant", *(f"#{v['number']}" for v in variants)]]
    for key in data["swept"]:
        out.append([key, *(v["overrides"].get(key, "") for v in variants)])
    if len({v["pipeline"] for v in variants}) > 1:
        out.append(["pipeline", *(v["pipeline"] for v in variants)])
    out.append(["status", *(v["status"] for v in variants)])
    trained: dict[str, int] = {}  # output dir -> the first variant that completed it (a shared job completes in all)
    for i, v in enumerate(variants):
        for stage in v["stages"].values():
            if stage["status"] == "completed":
                trained.setdefault(stage["output_dir"], i)
    for label, mine in (("trained", True), ("reused", False)):
        out.append([label, *(", ".join(n for n, s in v["stages"].items() if s["status"] in ("completed", "cached")
                                       and (trained.get(s["output_dir"]) == i) == mine) or "-"
                             for i, v in enumerate(variants))])
    names = [n for v in variants for n in v["stages"] if n not in data["shared"]]
    for name in dict.fromkeys(names):
        keys = [k for v in variants for k, x in v["stages"].get(name, {}).get("metrics", {}).items()
                if _worth_a_row(k, x)]
        for key in dict.fromkeys(keys):
            out.append([f"{name}.{key}", *(_fmt(v["stages"].get(name, {}).get("metrics", {}).get(key, ""))
                                          for v in variants)])
    return out


def render(data: dict[str, Any], markdown: bool = False) -> str:
    table = rows(data)
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in table]
        lines.insert(1, "|" + "---|" * len(table[0]))
    else:
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    head = f"Sweep {data['sweep']}: {len(data['variants'])} variants, run_dirs in {data['dir']}/<number>"
    tail = [f"trained once, shared by every variant: {', '.join(data['shared'])}" if data["shared"] else
            "no stage is shared by every variant",
            f"MLflow: the runs tagged {SWEEP_TAG}={data['sweep']} (search tags.`{SWEEP_TAG}` = '{data['sweep']}', "
            f"select them, Compare)"]
    return "\n".join([head, *lines, *(f"  {t}" if not markdown else f"\n{t}" for t in tail)])


def write(sweep: Sweep) -> tuple[str, Path]:
    """Print-ready table, and where sweep.json and sweep.md were written."""
    data = build(sweep)
    write_json(sweep.dir / "sweep.json", data)
    (sweep.dir / "sweep.md").write_text(render(data, markdown=True) + "\n")
    return render(data), sweep.dir / "sweep.json"


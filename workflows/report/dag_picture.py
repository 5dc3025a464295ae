"""Pictures of a plan's DAG: mermaid text (GitHub and many viewers draw it) and a self-contained SVG
laid out here, so no graphviz binary or browser-side JS is needed (MLflow's artifact view shows it).
Drawn from a live Plan, or from the PlanRecord a run_dir keeps (report.html).
"""

from __future__ import annotations

from html import escape

from posttrain.pipeline import Plan, PlanRecord

# Fill colours by stage status; a status not listed (before the run) is drawn neutral.
COLORS = {
    "completed": "#c8e6c9", "cached": "#e0e0e0", "given": "#e0e0e0", "failed": "#ffcdd2",
    "interrupted": "#ffe0b2", "skipped": "#fff9c4", "gated": "#fff9c4", "running": "#bbdefb",
}
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 170, 54, 40, 60, 20


def mermaid(plan: Plan | PlanRecord, statuses: dict[str, str] | None = None) -> str:
    """`flowchart TD` with one node per stage (name, type, reason or status) and its edges."""
    statuses = statuses or {}
    ids = {s.name: f"s{i}" for i, s in enumerate(plan.stages)}  # stage names may hold `-`, `.`
    lines = ["flowchart TD"]
    for stage in plan.stages:
        text = f"{stage.name}<br/>[{stage.type}]<br/>{statuses.get(stage.name) or stage.reason}"
        lines.append(f'    {ids[stage.name]}["{text.replace(chr(34), "#quot;")}"]')
    for stage in plan.stages:
        lines.extend(f"    {ids[up]} --> {ids[stage.name]}" for up in stage.upstream)
    for stage in plan.stages:
        if statuses.get(stage.name) in COLORS:
            lines.append(f"    style {ids[stage.name]} fill:{COLORS[statuses[stage.name]]}")
    return "\n".join(lines) + "\n"


def mermaid_markdown(plan: Plan | PlanRecord, statuses: dict[str, str] | None = None) -> str:
    return f"# Pipeline `{plan.name}`\n\n```mermaid\n{mermaid(plan, statuses)}```\n"


def _layers(plan: Plan | PlanRecord) -> list[list[str]]:
    """Stages grouped by their longest distance from a root (plan.stages is topological)."""
    depth: dict[str, int] = {}
    for stage in plan.stages:
        depth[stage.name] = 1 + max((depth[u] for u in stage.upstream if u in depth), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for stage in plan.stages:
        layers[depth[stage.name]].append(stage.name)
    return layers


def svg(plan: Plan | PlanRecord, statuses: dict[str, str] | None = None) -> str:
    """Top-down layered drawing: one row per DAG level, arrows from each upstream to its stage."""
    statuses = statuses or {}
    layers = _layers(plan)
    widest = max((len(layer) for layer in layers), default=1)
    width = 2 * MARGIN + widest * NODE_W + (widest - 1) * GAP_X
    height = 2 * MARGIN + len(layers) * NODE_H + (len(layers) - 1) * GAP_Y + 24
    pos: dict[str, tuple[float, float]] = {}
    for row, layer in enumerate(layers):
        row_width = len(layer) * NODE_W + (len(layer) - 1) * GAP_X
        x0 = (width - row_width) / 2
        for col, name in enumerate(layer):
            pos[name] = (x0 + col * (NODE_W + GAP_X), MARGIN + 24 + row * (NODE_H + GAP_Y))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 4}" font-size="14" font-weight="bold">{escape(plan.name)}</text>',
    ]
    for stage in plan.stages:
        x, y = pos[stage.name]
        for up in stage.upstream:
            ux, uy = pos[up]
            x1, y1, x2, y2 = ux + NODE_W / 2, uy + NODE_H, x + NODE_W / 2, y
            mid = (y1 + y2) / 2
            out.append(f'<path d="M {x1:.0f} {y1:.0f} C {x1:.0f} {mid:.0f}, {x2:.0f} {mid:.0f}, {x2:.0f} {y2:.0f}" '
                       'fill="none" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>')
    for stage in plan.stages:
        x, y = pos[stage.name]
        status = statuses.get(stage.name)
        fill = COLORS.get(status or "", "#f5f5f5")
        dash = ' stroke-dasharray="5,3"' if stage.external or status in ("skipped", "cached") else ""
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="8" fill="{fill}" '
                   f'stroke="#333"{dash}/>')
        out.append(f'<text x="{x + NODE_W / 2:.0f}" y="{y + 22:.0f}" font-size="14" font-weight="bold" '
                   f'text-anchor="middle">{escape(stage.name)}</text>')
        detail = f"[{stage.type}] {status or stage.reason}"
        if len(detail) > 26:
            detail = detail[:25] + "…"
        out.append(f'<text x="{x + NODE_W / 2:.0f}" y="{y + 40:.0f}" font-size="11" fill="#333" '
                   f'text-anchor="middle">{escape(detail)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"

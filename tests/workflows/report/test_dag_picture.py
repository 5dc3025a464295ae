"""The DAG pictures the pipeline's tracking run carries (workflows/report/dag_picture.py)."""

from __future__ import annotations

from workflows.config import compose
from workflows.planning import build_plan
from workflows.report.dag_picture import mermaid, svg


def test_dag_pictures_show_every_stage_and_edge(tmp_path):
    plan = build_plan(compose(["+pipeline=sft_dpo_kto", f"run_dir={tmp_path}/run"]))
    text = mermaid(plan, {"sft": "completed", "kto": "failed"})
    ids = {s.name: f"s{i}" for i, s in enumerate(plan.stages)}
    for stage in plan.stages:
        assert f'{ids[stage.name]}["{stage.name}<br/>[{stage.type}]' in text
        for up in stage.upstream:
            assert f"{ids[up]} --> {ids[stage.name]}" in text
    assert f"style {ids['kto']} fill:#ffcdd2" in text
    picture = svg(plan, {"sft": "completed"})
    assert picture.startswith("<svg") and picture.count("<rect") == len(plan.stages) + 1
    assert picture.count('marker-end="url(#arrow)"') == sum(len(s.upstream) for s in plan.stages)

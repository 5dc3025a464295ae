"""report.html (workflows/report/html.py, charts.py) from a hand-made run_dir: one self-contained page
with the summary, the DAG, every training stage's curves read generically from its history (an
SFT, a DPO and a GRPO-like stage), the eval's bars per model and per task type, and the plan. The
page in a browser, after a real run: tests/integration/test_observability.py."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import time

import pytest

from posttrain.artifacts import HISTORY_FILE, METRICS_FILE, REPORT_FILE, TABLE_FILE
from posttrain.pipeline import PlanRecord, StageRecord
from posttrain.status import Status
from tests.workflows.state.test_observe import _done, _summary
from workflows.report import charts
from workflows.report.html import main, report_at_end


def _history(folder, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HISTORY_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run_dir(tmp_path):
    run_dir = tmp_path / "run"
    stages = [("checkpoint", []), ("sft", ["checkpoint"]), ("dpo", ["sft"]), ("grpo", ["sft"]),
              ("eval", ["checkpoint", "sft", "dpo", "grpo"])]
    records = [StageRecord(n, n, up, "new", str(run_dir / n), str(run_dir / n / ("results" if n == "eval" else "model")),
                           f"{n}-fp") for n, up in stages]
    run_dir.mkdir()
    (run_dir / "plan.json").write_text(json.dumps(PlanRecord(
        "sft_dpo_grpo", str(run_dir), records, "local", "none", time.time() - 60, 1, "host",
        "python -m workflows.run +pipeline=x", "Plan for pipeline 'sft_dpo_grpo' <4 stages>").to_dict()))
    for name, _ in stages:
        _done(run_dir, name, train_loss=1.5)
    _history(run_dir / "sft", [{"step": s, "loss": 3 - s / 10, "learning_rate": 1e-3} for s in range(1, 11)]
             + [{"step": 10, "eval_loss": 2.5, "train_loss": 2.6}])
    _history(run_dir / "dpo", [{"step": s, "loss": 0.69 - s / 100, "rewards/accuracies": s / 10,
                                "rewards/margins": s / 20, "rewards/chosen": 0.1, "rewards/rejected": -0.1}
                               for s in range(1, 6)])
    _history(run_dir / "grpo", [{"step": s, "loss": 0.1, "reward": s / 5, "reward_std": 0.2, "kl": s / 100,
                                 "rewards/correct/mean": s / 6} for s in range(1, 6)])
    results = run_dir / "eval" / "results"
    results.mkdir(parents=True)
    (results / METRICS_FILE).write_text(json.dumps({m: {"accuracy": a, "accuracy_seen": a, "accuracy_unseen": a / 2,
                                                         "accuracy/copy": a, "accuracy/min": a / 2, "ppl": 10 / (a + .1),
                                                         "pref_accuracy": 0.5 + a / 2}
                                                     for m, a in (("checkpoint", 0.0), ("sft", 0.6), ("dpo", 0.8))}))
    (results / "samples.jsonl").write_text(json.dumps({"task": "copy", "seen": True}) + "\n"
                                           + json.dumps({"task": "min", "seen": False}) + "\n")
    (results / TABLE_FILE).write_text("model  accuracy\nsft    0.600\n")
    _summary(run_dir, {n: ("completed", "") for n, _ in stages}, finished_at=time.time())
    return run_dir


def test_panels_are_chosen_by_what_the_history_logged():
    sft = [{"step": 1, "loss": 2.0, "eval_loss": 2.1, "learning_rate": 1e-3, "train_loss": 2.0, "grad_norm": 3.0}]
    assert charts.panels(sft) == [("loss", ["eval_loss", "loss"]), ("learning rate", ["learning_rate"])]
    grpo = [{"step": 1, "reward": 0.5, "reward_std": 0.1, "kl": 0.01, "rewards/correct/mean": 0.4, "entropy": 1.0}]
    assert charts.panels(grpo) == [("rewards", ["reward", "reward_std", "rewards/correct/mean"]), ("KL", ["kl"])]
    dpo = [{"step": 1, "rewards/accuracies": 0.5, "eval_rewards/margins": 0.1, "rewards/chosen": 0.0}]
    assert charts.panels(dpo) == [("reward accuracy", ["rewards/accuracies"]),
                                  ("reward margin", ["eval_rewards/margins"]), ("rewards", ["rewards/chosen"])]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """`posttrain report <run_dir>` once (drawing takes seconds); its run_dir, stdout and exit code."""
    run_dir = _run_dir(tmp_path_factory.mktemp("report"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(run_dir)])
    return run_dir, out.getvalue(), code


def test_the_page_holds_every_chart_inline_the_dag_the_summary_and_the_plan(written):
    from PIL import Image

    page = (written[0] / REPORT_FILE).read_text()
    images = re.findall(r'<img class="chart" alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [alt for alt, _ in images] == ["loss across stages", "sft training curves", "dpo training curves",
                                          "grpo training curves", "eval: metrics per model",
                                          "eval: accuracy per task type"]
    for _, data in images:
        width, height = Image.open(io.BytesIO(base64.b64decode(data))).size
        assert width > 300 and height > 150
    assert "src=\"http" not in page and "<script" not in page  # nothing to fetch: it opens offline
    assert page.count("<svg") == 1 and all(f">{n}</text>" in page for n in ("checkpoint", "sft", "dpo", "grpo"))
    assert "<td>dpo</td><td>dpo</td><td class=\"status-completed\">completed</td>" in page
    assert "Plan for pipeline &#x27;sft_dpo_grpo&#x27; &lt;4 stages&gt;" in page  # escaped
    assert "<pre>model  accuracy\nsft    0.600\n</pre>" in page


def test_the_command_writes_it_and_a_fully_cached_rerun_keeps_it(written):
    run_dir, out, code = written
    assert code == 0 and out == f"Written to {run_dir / REPORT_FILE}\n"
    before = (run_dir / REPORT_FILE).stat().st_mtime_ns

    class Cached:
        status = Status.CACHED

    class Plan:
        pass

    Plan.run_dir = str(run_dir)
    assert report_at_end(Plan(), [Cached()]) is None  # nothing ran: the page is still true
    assert (run_dir / REPORT_FILE).stat().st_mtime_ns == before
    assert main([str(run_dir / "nowhere")]) == 2

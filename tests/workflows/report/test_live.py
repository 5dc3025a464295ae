"""The console a local run reports to (workflows/report/live.py): plain lines off a terminal, exactly
as before; on one, the pipeline table with the running stage's bar, step, ETA and metrics from its
progress.json, other lines above it, step lines not echoed, and a clean last frame on Ctrl-C.
A real run in a pseudo-terminal: tests/integration/test_observability.py."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from posttrain.artifacts import Progress
from posttrain.pipeline import Plan, PlannedStage, StageResult
from posttrain.spec import StageSpec
from posttrain.status import Status
from workflows.report.live import LiveConsole, PlainConsole, console_for


def _plan(tmp_path: Path) -> Plan:
    stages = []
    for name, upstream, reason in (("checkpoint", [], "cached"), ("sft", ["checkpoint"], "new"),
                                   ("dpo", ["sft"], "new")):
        spec = StageSpec(name=name, type=name, stage_dir=str(tmp_path / name), model_dir=str(tmp_path / name / "model"),
                         seed=0)
        stages.append(PlannedStage(name, name, upstream, spec, ["python", "-m", f"stages.{name}"], reason=reason))
    return Plan("sft_dpo", str(tmp_path), stages, config={"launcher": {"name": "local", "stream_logs": True}})


def _rich(width: int = 140):
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)


def test_off_a_terminal_the_lines_are_the_plain_ones(tmp_path, capsys):
    plan = _plan(tmp_path)
    sft = plan.stage("sft")
    with console_for(plan) as console:  # pytest's stdout is no terminal
        assert isinstance(console, PlainConsole)
        console.stage_started(sft)
        console.stage_line(sft, "[sft] step 10/500  loss 5.315  learning_rate 0.0009  1s\n")
        console.stage_line(sft, "a warning from a library\n")
        console.stage_failed(sft, "exit code 1", ["Traceback ...", "ValueError: bad"])
    out = capsys.readouterr()
    assert out.out == ("==> sft [sft] (new)\n[sft] step 10/500  loss 5.315  learning_rate 0.0009  1s\n"
                       "[sft] a warning from a library\n")
    assert out.err == "==> sft failed (exit code 1); last lines of its log:\n    Traceback ...\n    ValueError: bad\n"
    quiet = PlainConsole(echo=False)  # launcher.stream_logs=false
    quiet.stage_line(sft, "[sft] step 1/2\n")
    assert capsys.readouterr().out == ""


def test_the_table_shows_the_running_stages_bar_step_eta_and_metrics(tmp_path):
    plan = _plan(tmp_path)
    live = LiveConsole(plan, echo=True, console=_rich())
    live.stage_started(plan.stage("sft"))
    now = time.time()
    plan.stage("sft").dir.path.mkdir(parents=True)
    plan.stage("sft").dir.write_progress(Progress(
        stage="sft", pid=1, host="h", started_at=now - 40, updated_at=now, phase="training", step=30, max_steps=100,
        training_since=now - 30, metrics={"loss": 1.234, "learning_rate": 3e-4, "grad_norm": 9.0}))
    console = _rich()
    console.print(live.render())
    text = console.file.getvalue()
    assert "sft_dpo: 1/3 stages done" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in
            ("checkpoint", "sft", "dpo")}
    assert "cached" in rows["checkpoint"] and "queued" in rows["dpo"]
    sft = rows["sft"]
    assert "running" in sft and "30/100" in sft and "1m10s" in sft  # 30 steps in 30 s: 70 s to go
    assert "loss 1.234" in sft and "learning_rate 0.0003" in sft and "grad_norm" not in sft
    assert "━" in sft  # the bar


def test_lines_scroll_above_the_table_and_ctrl_c_leaves_a_clean_last_frame(tmp_path):
    plan = _plan(tmp_path)
    console = _rich()
    sft = plan.stage("sft")
    with pytest.raises(KeyboardInterrupt), LiveConsole(plan, echo=True, console=console) as live:
        live.stage_ended(plan.stage("checkpoint"), StageResult.of(plan.stage("checkpoint"), Status.CACHED))
        live.stage_started(sft)
        live.stage_line(sft, "[sft] step 1/100  loss 5  0s\n")
        live.stage_line(sft, "[sft] resuming from checkpoint-3\n")
        live.stage_last_words(sft, "[sft] SIGTERM: saved checkpoint-4; exiting with 143\n")
        raise KeyboardInterrupt
    text = console.file.getvalue()
    assert "[sft] resuming from checkpoint-3" in text and "saved checkpoint-4" in text
    assert "step 1/100" not in text  # the step is the table's, not a line
    last_frame = text[text.rindex("sft_dpo:"):]
    assert "interrupted" in last_frame.split("sft [sft]")[1].splitlines()[0]
    assert text.endswith("\x1b[?25h")  # the cursor is shown again ...
    assert text.removesuffix("\x1b[?25h").rstrip().endswith("queued")  # ... below the table, the last thing printed

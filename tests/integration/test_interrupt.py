"""SIGTERM to the orchestrator (kill, Ctrl-C, a scheduler) reaches the running stage, which gets
time to save a checkpoint; its last words land in stage.log. Quick for an integration test: the stage is a
stand-in script, the orchestrator and its local launcher are real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# Stands in for a training stage: on SIGTERM it "saves" and exits like stages/lib/interrupt.py does.
STAGE = textwrap.dedent("""
    import signal, sys, time
    def stop(signum, frame):
        time.sleep(0.5)  # a checkpoint takes a moment
        print("[checkpoint] SIGTERM: saved checkpoint-7; exiting with 143", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    print("[checkpoint] training", flush=True)
    time.sleep(120)
""")

DRIVER = textwrap.dedent("""
    import signal, sys
    from posttrain.tracking.none import NullTracker
    from workflows.config import compose
    from workflows.launchers.local import LAUNCHER
    from workflows.planning import build_plan
    from workflows.run import _interrupt
    from workflows.state.decide import decide
    from workflows.state.lock import lock_run_dir
    from workflows.store.views import attach

    signal.signal(signal.SIGTERM, _interrupt)  # what `python -m workflows.run` installs
    plan = build_plan(compose(["+pipeline=sft_dpo", f"run_dir={sys.argv[1]}", "tracking=none"]))
    lock_run_dir(plan.run_dir)
    decide(plan)
    attach(plan)  # <run_dir>/<stage> -> its store entry, as `python -m workflows.run` does
    plan.stages = plan.stages[:1]
    plan.stages[0].command = [sys.executable, "-c", sys.argv[2]]
    try:
        LAUNCHER.run(plan, NullTracker())
    except KeyboardInterrupt:
        sys.exit(130)
""")


def test_sigterm_to_the_orchestrator_lets_the_stage_checkpoint(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path), STAGE], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "[checkpoint] training" in line:
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    lines.extend(proc.stdout)
    assert proc.wait(60) == 130, "".join(lines)
    assert any("saved checkpoint-7" in line for line in lines)  # the console saw it
    assert "saved checkpoint-7" in (tmp_path / "checkpoint" / "stage.log").read_text()

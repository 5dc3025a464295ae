"""A stage's stop request (posttrain/stop.py): before training a signal ends the process at once
with 143; once the trainer can save, it is only recorded. In a child process, as a stage gets it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from posttrain.stop import EXIT_CODE
from tests.conftest import ROOT


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          check=False,
                          timeout=60)


def test_a_signal_before_training_ends_the_stage_with_143_and_runs_its_exit_handlers():
    proc = run("""
        import atexit, os, signal, time
        from posttrain import stop
        stop.exit_on_signal()
        atexit.register(lambda: print("exit handlers ran; requested", stop.requested()))  # a tracker ends its run
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(5)
        print("not stopped")
    """)
    assert proc.returncode == EXIT_CODE, proc.stderr
    assert proc.stdout.strip() == "exit handlers ran; requested ['SIGUSR1']"


def test_once_training_signals_are_only_recorded():
    proc = run("""
        import os, signal
        from posttrain import stop
        stop.exit_on_signal()
        stop.record_signals()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)
        print("still running; requested", stop.requested())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "still running; requested ['SIGTERM', 'SIGUSR1']"

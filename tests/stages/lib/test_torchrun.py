"""stages/lib/torchrun.py: torchrun that survives Slurm's USR1 warning and repeated SIGTERMs, and
reports workers that stopped on a signal with exit code 143. The real thing: torchrun starts two
workers that stop like a stage does (posttrain.stop), on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from posttrain.stop import EXIT_CODE
from stages.lib.torchrun import stopped_on_signal
from tests.conftest import ROOT

# Like a stage: a signal is only recorded while it trains; it then exits with EXIT_CODE.
WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from posttrain import stop
    stop.record_signals()
    Path(sys.argv[1], "ready-" + os.environ["RANK"]).write_text(str(os.getpid()))
    while not stop.requested():
        time.sleep(0.05)
    time.sleep(0.4)  # "saving a checkpoint": the test's second SIGTERM to torchrun came 0.1 s after the first
    Path(sys.argv[1], "seen-" + os.environ["RANK"]).write_text(",".join(stop.requested()))
    time.sleep(0.1)
    Path(sys.argv[1], "stopped-" + os.environ["RANK"]).write_text(",".join(stop.requested()))
    sys.exit(stop.EXIT_CODE)
""")


def test_workers_that_stopped_on_a_signal_are_told_from_a_crash():
    assert stopped_on_signal([EXIT_CODE, EXIT_CODE])
    assert stopped_on_signal([EXIT_CODE, -signal.SIGTERM])  # the other worker was ended by torchrun after it
    assert not stopped_on_signal([1, EXIT_CODE])  # one worker crashed
    assert not stopped_on_signal([-signal.SIGKILL])  # killed from outside (OOM killer, kill -9)
    assert not stopped_on_signal([])


@pytest.mark.slow
def test_usr1_is_survived_and_sigterm_reaches_every_worker_once(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stages.lib.torchrun", "--standalone", "--nproc_per_node", "2",
                             str(script), str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not all((tmp_path / f"ready-{r}").exists() for r in (0, 1)):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR1)  # plain torchrun dies of it (exit code 138)
        time.sleep(0.5)
        assert proc.poll() is None, "torchrun died of SIGUSR1"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # Slurm sends more than one; plain torchrun then exits 1 at once
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_CODE, output
    # each worker got exactly one SIGTERM from the two sent to torchrun (forwarded once) and saved its "checkpoint"
    assert [(tmp_path / f"seen-{r}").read_text() for r in (0, 1)] == ["SIGTERM", "SIGTERM"], output
    # once the first worker has exited, torchrun itself sends SIGTERM to the others (its own shutdown, which the
    # stages only record: posttrain/stop.py); a worker still saving may see that one too, and still finishes
    assert all(set((tmp_path / f"stopped-{r}").read_text().split(",")) == {"SIGTERM"} for r in (0, 1)), output

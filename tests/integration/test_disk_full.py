"""run_dir and the stage store on a small tmpfs that fills while a stage saves: the orchestrator reports the stage failed with
ENOSPC named, writes what summary it can, exits non-zero without a traceback; the failed attempt's traceback
is in the stage's stage.log; no false manifest, so with space freed the same command runs the stage again."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import env

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()[-300:]}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_fails_the_stage_not_the_orchestrator(small_disk, sft_only, tiny_model):
    run_dir = small_disk / "run"
    # a checkpoint of the 2 MB tiny model (weights + AdamW state) does not fit in what is left of 5 MB
    command = sft_only(run_dir, "tracking=none", "stages.sft.trainer.max_steps=4", "stages.sft.trainer.save_steps=2",
                       f"store_dir={small_disk / 'store'}")
    full = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert full.returncode == 1, full.stdout[-3000:] + full.stderr[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]  # the orchestrator's own output
    assert f"warning: the stage store {small_disk / 'store'} has " in full.stderr  # predicted at plan time
    assert "may write about" in full.stderr
    assert "==> sft failed (exit code 1; no space left on device (ENOSPC)" in full.stderr, full.stderr[-3000:]
    log = (run_dir / "sft" / "stage.log").read_text(errors="replace")
    assert "Traceback (most recent call last)" in log, log[-2000:]  # the failed attempt's last words
    assert not (run_dir / "sft" / "manifest.json").exists()  # no false manifest
    assert ("Written to " in full.stdout) or ("Not written to " in full.stdout and "No space left" in full.stdout)

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    again = subprocess.run([*command, "dry_run=true"], cwd=ROOT, env=env(), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "warning: " not in again.stderr, again.stderr[-2000:]
    [sft_line] = [line for line in again.stdout.splitlines() if line.strip().startswith("2. sft")]
    assert "cached" not in sft_line, sft_line  # it runs again (tests/integration/test_resume.py: it resumes)

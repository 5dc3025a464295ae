"""What the entry point writes before it may: nothing outside run_dir, nothing for a refused invocation."""

from __future__ import annotations

import fcntl
import os

from tests.conftest import run_cli
from workflows.state.lock import BUSY_EXIT_CODE, lock_path


def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_refused_invocations_write_nothing(tmp_path):
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    escaped = run_cli("+pipeline=sft_dpo", "name=../../x", "tracking=none", cwd=work)
    assert escaped.returncode == 2 and "Traceback" not in escaped.stderr, escaped.stderr
    assert "name: '../../x' is not a valid pipeline name" in escaped.stderr
    assert listing(tmp_path) == ["work", "work/here"]  # no run.log, .hydra or outputs/, here or above

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    on_file = run_cli("+pipeline=sft_dpo", f"run_dir={a_file}", "tracking=none", cwd=work)
    assert on_file.returncode == 2 and "Traceback" not in on_file.stderr, on_file.stderr
    assert f"run_dir '{a_file}': is a file, not a folder; choose another run_dir" in on_file.stderr

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- what ran\n")
    lock = lock_path(str(run_dir))
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another invocation holds run_dir
    try:
        busy = run_cli("+pipeline=sft_dpo", f"run_dir={run_dir}", "tracking=none", "stages.dpo.trainer.beta=0.5",
                       cwd=work)
    finally:
        os.close(fd)
    assert busy.returncode == BUSY_EXIT_CODE, busy.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == "- what ran\n"
    assert listing(run_dir) == [".hydra", ".hydra/overrides.yaml", ".posttrain", ".posttrain/lock"]

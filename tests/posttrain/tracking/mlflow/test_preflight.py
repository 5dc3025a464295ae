"""The MLflow preflight (posttrain/tracking/mlflow/preflight.py): an unreachable server or an unusable
store stops everything, within seconds and with a clear message, before any stage starts."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from posttrain.tracking import TrackingError
from posttrain.tracking.mlflow.preflight import preflight
from tests.conftest import run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_refused_before_any_stage(proc: subprocess.CompletedProcess, seconds: float, run_dir: Path, uri: str):
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert seconds < 10, f"took {seconds:.1f}s"
    assert f"tracking server {uri} is not reachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(run_dir.glob("*/stage.log")) and not list(run_dir.glob("*/stage.yaml"))


def test_server_down_is_a_clear_error_within_10s(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    proc = run_cli("+pipeline=sft_dpo", f"run_dir={tmp_path}/run", f"tracking.uri={uri}", timeout=60)
    _assert_refused_before_any_stage(proc, time.monotonic() - start, tmp_path / "run", uri)
    assert "Connection refused" in proc.stderr and "tracking=none" in proc.stderr


def test_server_that_never_answers_is_a_clear_error_within_10s(tmp_path):
    with socket.socket() as server:  # accepts connections into its backlog, never replies
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        proc = run_cli("+pipeline=sft_dpo", f"run_dir={tmp_path}/run", f"tracking.uri={uri}", timeout=60)
        _assert_refused_before_any_stage(proc, time.monotonic() - start, tmp_path / "run", uri)
    assert "timed out" in proc.stderr


def test_sqlite_store_in_an_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TrackingError, match="cannot create"):
        preflight(f"sqlite:///{blocker}/sub/mlflow.db")

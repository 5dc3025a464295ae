"""Against a real `mlflow server` on loopback, the way a team uses it: a 2-process SFT stage is
interrupted (SIGTERM, like a Slurm preemption) after its first checkpoint and resumed by running the
same command again. Then headless Chromium loads the MLflow UI and shows the runs as a person sees
them; its screenshot is kept (tests/artifacts/, or $POSTTRAIN_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.mlflow_server]

SFT_ONLY = """# @package _global_
# checkpoint -> sft: the smallest pipeline with a training stage (this test's own config dir)
defaults:
  - /stage@stages.sft: sft
  - /data@stages.sft.data: sft_demo
name: sft_only
"""
MAX_STEPS, SAVE_STEPS = 16, 3
ARTIFACTS = Path(os.environ.get("POSTTRAIN_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` with a SQLite store and proxied artifacts, in its own process group."""
    base = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{base}/mlflow.db", "--artifacts-destination", str(base / "artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(base / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield {"uri": uri, "base": base}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _cli(conf: Path, run_dir: Path, uri: str) -> list[str]:
    return [sys.executable, "-m", "workflows.run", f"hydra.searchpath=[file://{conf}]", "+pipeline=sft_only",
            f"run_dir={run_dir}", f"tracking.uri={uri}", "launcher.stream_logs=false",
            "stages.sft.resources.processes_per_node=2",  # torchrun, DDP on CPU (gloo)
            f"stages.sft.trainer.max_steps={MAX_STEPS}", f"stages.sft.trainer.save_steps={SAVE_STEPS}",
            "stages.sft.trainer.logging_steps=1"]


@pytest.fixture(scope="module")
def session(server, tmp_path_factory):
    """Run 1 is stopped by SIGTERM once sft saved a checkpoint; run 2 is the same command."""
    from mlflow.tracking import MlflowClient

    base = tmp_path_factory.mktemp("session")
    (base / "conf" / "pipeline").mkdir(parents=True)
    (base / "conf" / "pipeline" / "sft_only.yaml").write_text(SFT_ONLY)
    run_dir = base / "run"
    command = _cli(base / "conf", run_dir, server["uri"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(base / "first.log", "w") as out:
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        saved = run_dir / "sft" / "checkpoints" / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json"
        deadline = time.monotonic() + 400
        while not saved.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert first.returncode == 130, (base / "first.log").read_text()[-3000:]
    client = MlflowClient(server["uri"])
    experiment = client.get_experiment_by_name("sft_only")
    after_first = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return {"client": client, "experiment": experiment, "runs": runs, "after_first": after_first,
            "parents": [r for r in runs if r.data.tags.get("posttrain.role") == "pipeline"], "run_dir": run_dir}


def test_a_two_process_stage_logs_one_run_even_across_a_resume(session):
    sft_runs = [r for r in session["runs"] if r.info.run_name == "sft"]
    assert len(sft_runs) == 1, [r.info.run_name for r in session["runs"]]
    # two invocations: 2 parents; checkpoint built once then reused (a `cached` marker run); one sft run
    assert sorted(r.info.run_name for r in session["runs"] if r.data.tags.get("posttrain.role") == "stage") == [
        "checkpoint", "checkpoint", "sft"]
    assert len(session["runs"]) == 5, "a stray run: a second rank or a second attempt logged on its own"
    history = session["client"].get_metric_history(sft_runs[0].info.run_id, "loss")
    steps = [m.step for m in history]
    assert sorted(steps) == list(range(1, MAX_STEPS + 1)), "each step logged once, by rank 0, in one run"


def test_interrupted_is_killed_then_the_resumed_stage_continues_its_run(session):
    first_parent, second_parent = session["parents"]
    killed_sft = session["after_first"]["sft"]
    assert killed_sft.info.status == "KILLED" and first_parent.info.status == "KILLED"
    [sft] = [r for r in session["runs"] if r.info.run_name == "sft"]
    assert sft.info.run_id == killed_sft.info.run_id
    assert sft.info.status == "FINISHED" and second_parent.info.status == "FINISHED"
    assert sft.data.tags["mlflow.parentRunId"] == second_parent.info.run_id
    assert sft.data.tags["posttrain.previous_parent_run_id"] == first_parent.info.run_id
    assert sft.data.tags["posttrain.resumed"] == "true"
    marker = next(r for r in session["runs"] if r.data.tags.get("posttrain.cached") == "true")
    assert marker.data.tags["mlflow.parentRunId"] == second_parent.info.run_id
    assert marker.data.tags["posttrain.source_run_id"] == session["after_first"]["checkpoint"].info.run_id
    assert sft.data.tags["posttrain.upstream.checkpoint.run_id"] == marker.data.tags["posttrain.source_run_id"]


def test_artifacts_go_through_the_server(session, server, tmp_path):
    client, parent = session["client"], session["parents"][-1]
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")
    svg = Path(client.download_artifacts(parent.info.run_id, "dag.svg", str(tmp_path))).read_text()
    assert ">sft</text>" in svg
    stored = list((server["base"] / "artifacts").rglob("dag.svg"))
    assert len(stored) == 2  # one per parent run, in the server's --artifacts-destination
    [sft] = [r for r in session["runs"] if r.info.run_name == "sft"]
    assert {"stage.yaml", "stage.log"} <= {a.path for a in client.list_artifacts(sft.info.run_id)}


def _chromium(url: str, out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={out_dir}",
         "--virtual-time-budget=15000", *args, url],
        capture_output=True, text=True, timeout=180)


@pytest.mark.browser
def test_the_ui_shows_the_pipeline_and_its_stage_runs(session, server, tmp_path):
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; scripts/setup.sh --test)")
    experiment_id = session["experiment"].experiment_id
    parents = [p.info.run_name for p in session["parents"]]
    # The default view: parent runs, each with an expander holding its stage runs.
    default = _chromium(f"{server['uri']}/#/experiments/{experiment_id}/runs", tmp_path / "profile1", "--dump-dom")
    assert default.returncode == 0, default.stderr[-2000:]
    for name in parents:
        assert name in default.stdout
    assert re.search(r">\s*5\s*<.*matching runs", default.stdout, re.S)
    # Sorted by name the table is flat: every stage run is a row next to the pipelines.
    flat = f"{server['uri']}/#/experiments/{experiment_id}/runs?orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    dom = _chromium(flat, tmp_path / "profile2", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in ["checkpoint", "sft", *parents]:
        assert re.search(rf">\s*{re.escape(name)}\s*<", dom.stdout), f"run '{name}' is not in the page"
    assert "sft.jsonl" in dom.stdout  # the Dataset column names what sft trained on
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "mlflow_ui_runs.png"
    shot.unlink(missing_ok=True)
    taken = _chromium(flat, tmp_path / "profile3", "--window-size=1600,900", "--hide-scrollbars",
                      f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]

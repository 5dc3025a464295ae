"""A real `mlflow server` killed while a stage trains: training finishes, the pipeline ends within 60 s of
the last training step with a clear warning, and the next run that reaches the server ends the runs left
RUNNING with their true status (posttrain/tracking/mlflow/bounds.py, settle.py)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import env, free_port, kill_group, start_mlflow_server, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.mlflow_server]
BOUND_S = 60  # from the last training step to the pipeline's exit
STEPS = 12


def runs(uri: str) -> dict[str, dict]:
    """{run name: {status, role}} of every run, through the REST API."""
    def call(path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{uri}/api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    experiments = call("experiments/search", {"max_results": 10})["experiments"]
    ids = [e["experiment_id"] for e in experiments if e["name"] == "sft_only"]
    found = call("runs/search", {"experiment_ids": ids, "max_results": 50}).get("runs", [])
    return {r["info"]["run_name"]: {"status": r["info"]["status"],
                                    "role": {t["key"]: t["value"] for t in r["data"].get("tags", [])}.get(
                                        "posttrain.role")} for r in found}


def test_a_killed_tracking_server_never_stops_the_pipeline(tmp_path, sft_only):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    run_dir = tmp_path / "run"
    command = sft_only(run_dir, f"tracking.uri={uri}", f"stages.sft.trainer.max_steps={STEPS}",
                       "stages.sft.trainer.save_steps=1000")
    lines: list[tuple[float, str]] = []
    proc = subprocess.Popen(command, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = threading.Thread(target=lambda: [lines.append((time.monotonic(), line)) for line in proc.stdout])
    reader.start()
    try:
        wait_for(lambda: any(f"[sft] step 3/{STEPS}" in line for _, line in lines), 400, "sft to train")
        kill_group(server)  # the server dies while the stage trains
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    output = "".join(line for _, line in lines)
    assert proc.returncode == 0, output[-4000:]  # every stage completed; tracking loss is a warning
    last_step = max(t for t, line in lines if f"[sft] step {STEPS}/{STEPS}" in line)
    ended = lines[-1][0]
    assert ended - last_step < BOUND_S, f"{ended - last_step:.0f} s from the last step to the end\n{output[-3000:]}"
    assert "tracking: LOST the MLflow store at" in output, output[-3000:]
    assert (run_dir / "sft" / "manifest.json").is_file() and "Traceback" not in output

    server = start_mlflow_server(tmp_path, port)  # the server is back, with its database
    try:
        assert runs(uri)["sft"]["status"] == "RUNNING"  # left so by the lost invocation
        again = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=400)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "tracking: ended 2 run(s) an earlier invocation left open" in again.stdout, again.stdout[-3000:]
        statuses = runs(uri)
        assert statuses["sft"]["status"] == "FINISHED"  # what the orchestrator recorded: the stage completed
        [parent] = [v for v in statuses.values() if v["role"] == "pipeline"]
        assert parent["status"] == "FINISHED"
    finally:
        kill_group(server)

"""What the fault tests share: a tiny model built once (so no run pays for a checkpoint stage), a one-stage
SFT pipeline, the stage process tree of an orchestrator, and a real `mlflow server`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SFT_ONLY = """# @package _global_
# policy -> sft: the smallest pipeline with a training stage (this test's own config dir)
defaults:
  - /stage@stages.sft: sft
  - /data@stages.sft.data: sft_demo
name: sft_only
"""


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The demo's tiny Llama with its tokenizer, saved as a plain model dir (random weights)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_model")
    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / "demo" / "tiny_tokenizer"))
    sizes = yaml.safe_load((ROOT / "conf" / "model" / "tiny.yaml").read_text())["config"]
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def sft_only(tmp_path, tiny_model):
    """`sft_only(run_dir, *overrides)`: the argv of `workflows.run` for one SFT stage on the tiny model."""
    conf = tmp_path / "conf"
    (conf / "pipeline").mkdir(parents=True)
    (conf / "pipeline" / "sft_only.yaml").write_text(SFT_ONLY)

    def command(run_dir: Path, *overrides: str) -> list[str]:
        return [sys.executable, "-m", "workflows.run", f"hydra.searchpath=[file://{conf}]", "+pipeline=sft_only",
                f"run_dir={run_dir}", "model=hf", f"model.name_or_path={tiny_model}", "stages.sft.data.eval_sources=[]",
                "stages.sft.trainer.logging_steps=1", *overrides]
    return command


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += children
            todo += children
    return out


def alive(pid: int) -> bool:
    """Any thread of `pid` still running (a zombie waiting for a reaper counts as gone; a zombie thread-group
    leader whose other threads are still exiting does not: they hold its files)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return True
        except OSError:
            continue
    return False


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(base: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on loopback with a SQLite store in `base`, in its own process group; returns once it answers."""
    log = open(base / f"server-{time.monotonic_ns()}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{base}/mlflow.db", "--artifacts-destination", str(base / "artifacts")],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return True
        except OSError:
            return False
    wait_for(up, 120, "mlflow server", poll=0.5)
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)

"""Seeing what a run does, on one small sft_dpo run_dir taken through four states:
1. a full run in a pseudo-terminal: the live view draws the pipeline (no plain step lines), the
   summary follows it; `posttrain status` says finished; report.html opens in headless Chromium
   and shows its charts (screenshot kept in tests/artifacts/, or $POSTTRAIN_TEST_ARTIFACTS);
   `posttrain report` writes it again from the run_dir alone;
2. DPO fails (a learning-rate schedule TRL rejects when the stage builds its config): the live
   view shows the failure and the summary cleanly; status names the error line and the skipped eval;
3. DPO trains again off a terminal (the plain step lines, nothing drawn): status while it runs
   shows its step and ETA and the eval waiting;
4. the orchestrator and the stage are killed with SIGKILL: status says interrupted, at which
   checkpoint the same command resumes, and that the eval never started.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("POSTTRAIN_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
IMAGES = ["loss across stages", "sft training curves", "dpo training curves", "eval: metrics per model",
          "eval: accuracy per task type"]


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workflows.run", "+pipeline=sft_dpo", f"run_dir={run_dir}", "tracking=none",
            "stages.sft.trainer.max_steps=6", "stages.sft.trainer.save_steps=3", "stages.sft.trainer.logging_steps=2",
            "stages.dpo.trainer.logging_steps=1", "stages.eval.eval.max_rows=16", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}


def _in_pty(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run `argv` with a 160x50 pseudo-terminal as its stdin, stdout and stderr; (exit code, all it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=_env())
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    os.close(master)
    if proc.poll() is None:
        proc.kill()
    return proc.wait(), out.decode(errors="replace")


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _status(run_dir: Path) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", "status", str(run_dir), "--json"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _stages(status: dict) -> dict[str, dict]:
    return {s["name"]: s for s in status["stages"]}


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("observe")
    run_dir = base / "run"
    out: dict = {"run_dir": run_dir, "base": base}
    # 1. the whole pipeline on a terminal
    out["pty_code"], out["pty"] = _in_pty(_command(run_dir, "stages.dpo.trainer.max_steps=4"))
    out["finished"] = _status(run_dir)
    out["fingerprints"] = {n: json.loads((run_dir / n / "manifest.json").read_text())["fingerprint"]
                           for n in ("sft", "dpo")}
    out["outputs"] = {n: os.path.realpath(run_dir / n / "model") for n in ("sft", "dpo")}  # their store entries now
    shutil.copy(run_dir / "report.html", base / "report_at_end.html")
    (run_dir / "report.html").unlink()
    out["report_cmd"] = subprocess.run([sys.executable, "-m", "workflows.cli", "report", str(run_dir)], cwd=ROOT,
                                       env=_env(), capture_output=True, text=True, timeout=300)
    out["report_again"] = (run_dir / "report.html").read_text() if (run_dir / "report.html").exists() else ""
    # 2. dpo fails at run time (a valid optimizer whose package is missing), on a terminal too
    out["failing_code"], out["failing"] = _in_pty(_command(run_dir, "stages.dpo.trainer.max_steps=4",
                                                           "stages.dpo.trainer.optim=adamw_bnb_8bit"))
    out["failed"] = _status(run_dir)
    out["report_failed"] = (run_dir / "report.html").read_text()
    # 3. dpo trains (a long run, off a terminal) ...
    log = open(base / "running.log", "w")
    running = subprocess.Popen(_command(run_dir, "stages.dpo.trainer.max_steps=400", "stages.dpo.trainer.save_steps=2"),
                               cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    progress_file = run_dir / "dpo" / "progress.json"
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and running.poll() is None:
            progress = json.loads(progress_file.read_text()) if progress_file.exists() else {}
            if progress.get("step", 0) >= 5 and (run_dir / "dpo" / "checkpoints" / "checkpoint-4").exists():
                break
            time.sleep(0.2)
        out["running"] = _status(run_dir)
        # 4. ... until everything is killed outright
        stage_pid = json.loads(progress_file.read_text())["pid"]
        os.kill(running.pid, signal.SIGKILL)
        os.kill(stage_pid, signal.SIGKILL)
        running.wait(60)
        while _running(stage_pid):
            time.sleep(0.1)
    finally:
        if running.poll() is None:
            running.kill()
        log.close()
    out["running_log"] = (base / "running.log").read_text()
    out["killed"] = _status(run_dir)
    return out


def test_on_a_terminal_the_live_view_draws_the_pipeline_and_the_summary_follows(story):
    assert story["pty_code"] == 0, story["pty"][-3000:]
    raw = story["pty"]
    assert "\x1b[1A" in raw and "\x1b[2K" in raw, "nothing was redrawn in place"
    plain = ANSI.sub("", raw)
    assert "━" in plain and "sft_dpo: 4/4 stages done" in plain
    assert not re.search(r"^\[(sft|dpo)\] step \d+/\d+", plain, re.M), "plain step lines beside the live view"
    assert "[eval] held-out results:" in plain  # the stages' other lines scroll above the table
    last_frame = plain[plain.rindex("sft_dpo: 4/4 stages done"):plain.index("Summary:")]
    for name in ("checkpoint", "sft", "dpo", "eval"):
        assert re.search(rf"^{name} \[{name}\]\s+completed", last_frame, re.M), last_frame
    assert re.search(r"^dpo \[dpo\]\s+completed\s+\S+\s+━+\s+4/4", last_frame, re.M), last_frame
    assert plain.rstrip().endswith(f"Written to {story['run_dir'] / 'summary.json'}")


def test_status_of_the_finished_run(story):
    code, status = story["finished"]
    assert code == 0 and status["state"] == "finished"
    stages = _stages(status)
    assert {n: s["status"] for n, s in stages.items()} == {n: "completed" for n in ("checkpoint", "sft", "dpo", "eval")}
    for name in ("sft", "dpo"):
        assert stages[name]["output_dir"] == story["outputs"][name]  # its store entry
        assert stages[name]["fingerprint"] == story["fingerprints"][name]  # what its manifest says it was built from
    assert stages["dpo"]["metrics"]["train_loss"] > 0 and "took" in stages["dpo"]["detail"]


def test_the_report_opens_in_chromium_and_shows_its_charts(story, tmp_path):
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; scripts/setup.sh --test)")
    from PIL import Image

    page = story["base"] / "report_at_end.html"
    assert re.findall(r'<img class="chart" alt="([^"]+)" src="data:image/png;base64,', page.read_text()) == IMAGES
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    taken = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,3600", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    colors = Image.open(shot).convert("RGB").getcolors(1 << 24)

    def near(color: tuple[int, int, int]) -> int:
        return sum(n for n, c in colors if sum(abs(a - b) for a, b in zip(c, color)) < 30)

    # matplotlib's first two colours: the curves' and the bars' ink, drawn only if the images decoded
    assert near((31, 119, 180)) > 3000 and near((255, 127, 14)) > 3000


def test_the_report_command_writes_it_again_from_the_run_dir(story):
    assert story["report_cmd"].returncode == 0, story["report_cmd"].stderr
    assert re.findall(r'<img class="chart" alt="([^"]+)"', story["report_again"]) == IMAGES


def test_a_failure_reads_cleanly_in_the_live_view(story):
    assert story["failing_code"] == 1
    plain = ANSI.sub("", story["failing"])
    failure = plain.index("==> dpo failed (exit code 1); last lines of its log:")
    assert "bitsandbytes" in plain[failure:failure + 3000]  # its log's last lines, above the table
    last_frame = plain[plain.rindex("sft_dpo: "):plain.index("Summary:")]
    assert re.search(r"^dpo \[dpo\]\s+failed", last_frame, re.M)
    assert re.search(r"^eval \[eval\]\s+skipped", last_frame, re.M)
    assert "  dpo: exit code 1; see " in plain[plain.index("Summary:"):]


def test_status_names_the_failed_stages_error_and_the_skipped_eval(story):
    code, status = story["failed"]
    stages = _stages(status)
    assert code == 1 and stages["dpo"]["status"] == "failed"
    assert "bitsandbytes" in stages["dpo"]["error"] and stages["dpo"]["detail"].startswith(stages["dpo"]["error"])
    assert stages["eval"]["status"] == "skipped" and stages["sft"]["status"] == "cached"
    page = story["report_failed"]  # written at the end of that run too, and as true as its status
    assert '<td class="status-failed">failed</td>' in page and "bitsandbytes" in page
    assert re.findall(r'<img class="chart" alt="([^"]+)"', page) == ["sft training curves"]  # no stale eval


def test_status_of_a_run_still_going_and_off_a_terminal_the_plain_lines(story):
    code, status = story["running"]
    stages = _stages(status)
    dpo = stages["dpo"]
    assert code == 0 and status["state"] == "running" and status["orchestrator"]["alive"]
    assert dpo["status"] == "running" and dpo["max_steps"] == 400 and dpo["step"] >= 5
    assert dpo["eta_seconds"] > 0 and re.match(r"step \d+/400, ETA \S+", dpo["detail"])
    assert (stages["eval"]["status"], stages["eval"]["detail"]) == ("queued", "waiting for dpo")
    log = story["running_log"]
    assert re.search(r"^\[dpo\] step 1/400  loss \S+", log, re.M) and "\x1b[" not in log  # never both


def test_status_after_kill_9_says_where_the_same_command_resumes(story):
    code, status = story["killed"]
    stages = _stages(status)
    dpo = stages["dpo"]
    assert code == 1 and status["state"] == "stopped" and not status["orchestrator"]["alive"]
    assert dpo["status"] == "interrupted" and dpo["resume_from"] is not None
    newest = max(int(p.name.split("-")[1]) for p in (story["run_dir"] / "dpo" / "checkpoints").glob("checkpoint-*")
                 if (p / "trainer_state.json").exists())
    assert dpo["resume_from"] == f"checkpoint-{newest}" and f"resumes from checkpoint-{newest}" in dpo["detail"]
    assert stages["eval"]["status"] == "not started"

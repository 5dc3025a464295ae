"""A DPO stage on two Slurm nodes (2 nodes x 1 process, gloo, CPU), through posttrain's own
multi-node path (the sbatch script of tests/golden/dpo_2x8_zero3.sbatch: srun per node, torchrun
with c10d rendezvous on the first host), and the faults multi-node stages meet.

The cluster is `.ci/slurm/two_nodes/up.sh`: one slurmctld and two slurmd in their own network
namespaces, each node with its own hostname and address. posttrain runs on its login node
(`pt-head`), as a user would. Two stories run side by side on it:

- the main one (tests/conf/pipeline/two_nodes.yaml: checkpoint -> dpo on 2 nodes -> polish):
  1. rank 1 (on pt-node2) is killed with SIGKILL after the first checkpoint: dpo fails, polish
     never starts;
  2. the same command again: dpo resumes from that checkpoint on both nodes and completes, then
     polish trains on its output.
- the time limit (from the same checkpoint model): a dpo job submitted with `--signal=USR1@150`
  whose time limit is cut to a minute or two once it trains (`scontrol update TimeLimit=`):
  Slurm's warning makes both ranks save a checkpoint and the stage is `interrupted`.
Skipped (with the reason) without the cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from posttrain.artifacts import StageDir
from stages.lib.ranks import read_records
from tests.conftest import ROOT, read_summary
from tests.slurm_two_nodes import HEAD, NODES, Background, cluster_available, head, job, on, seconds

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

DPO_STEPS, SAVE_STEPS = 12, 4
WARNING_SECONDS = 150  # --signal=USR1@150: Slurm sends it once the time left is under 150 s + its 30 s check period


def overrides(run_dir: Path, inputs: Path) -> list[str]:
    return [
        f"hydra.searchpath=[file://{ROOT / 'tests' / 'conf'}]", "+pipeline=two_nodes", f"run_dir={run_dir}",
        "launcher=slurm", "launcher.wait=true", "launcher.poll_seconds=1", f"model.tokenizer={inputs / 'tokenizer'}",
        f"stages.dpo.data.sources.0.path={inputs / 'prefs.jsonl'}", "stages.dpo.data.eval_sources=[]",
        f"stages.polish.data.sources.0.path={inputs / 'sft.jsonl'}", "stages.polish.data.eval_sources=[]",
        f"stages.dpo.trainer.max_steps={DPO_STEPS}", f"stages.dpo.trainer.save_steps={SAVE_STEPS}",
        "stages.dpo.trainer.per_device_train_batch_size=4", "stages.dpo.trainer.logging_steps=1",
        "stages.polish.trainer.max_steps=2", "stages.polish.trainer.save_strategy=no",
        "+launcher.env.POSTTRAIN_RANK_DIGESTS=1",  # each rank records the digest of its final weights
        "+launcher.env.OMP_NUM_THREADS=1",  # 2 nodes x 1 process share this machine's cores
    ]


def complete_checkpoint(run_dir: Path, stage: str, step: int) -> bool:
    return any(s == step for s, _ in StageDir(run_dir / stage).complete_checkpoints())


def job_id(run_dir: Path, stage: str) -> str:
    return json.loads((run_dir / stage / "job.json").read_text())["job_id"]


def cut_time_limit_once_training(run: Background, run_dir: Path, out: dict) -> None:
    """Once the dpo job trains, cut its time limit to 1-2 minutes from now: under USR1@150's lead."""
    try:
        run.wait_until(lambda: re.search(r"^\[dpo\] step 2/", run.output, re.M), "dpo step 2")
        job_ = job_id(run_dir, "dpo")
        minutes = seconds(job(job_)["RunTime"]) // 60 + 2
        update = head("scontrol", "update", f"JobId={job_}", f"TimeLimit={minutes}")
        assert update.returncode == 0, update.stderr
        out["cut_at"] = time.time()
        run.wait_until(lambda: "SIGUSR1: saved" in run.output, "the time limit's warning", timeout=240)
        out["saved_at"] = time.time()
    except BaseException as err:  # noqa: BLE001 - re-raised by the test that reads it
        out["error"] = err


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> dict:
    ok, why = cluster_available()
    if not ok:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("two_nodes")
    inputs = root / "inputs"  # private copies: nothing regenerated elsewhere changes a fingerprint here
    shutil.copytree(ROOT / "demo" / "tiny_tokenizer", inputs / "tokenizer")
    for name, rows in (("sft.jsonl", 64), ("prefs.jsonl", 64)):
        lines = (ROOT / "data" / "demo" / name).read_text().splitlines(keepends=True)
        (inputs / name).write_text("".join(lines[:rows]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POSTTRAIN_CACHE_DIR": str(root / "cache")}
    run_dir, limit_dir, db = root / "run", root / "time_limit", root / "mlflow.db"
    command = on(HEAD, sys.executable, "-m", "workflows.run", *overrides(run_dir, inputs), f"tracking.uri=sqlite:///{db}")
    out: dict = {"run_dir": run_dir, "limit_dir": limit_dir, "db": db, "seconds": {}}
    start = time.time()

    first = Background(command, env)
    # The time-limit story starts from the same checkpoint model, once it is built (no job of its own).
    first.wait_until(lambda: (run_dir / "checkpoint" / "manifest.json").exists(), "the checkpoint stage")
    limited = Background(on(HEAD, sys.executable, "-m", "workflows.run", *overrides(limit_dir, inputs), "tracking=none",
                            f"stages.dpo.policy={run_dir / 'checkpoint' / 'model'}",
                            "stages.dpo.trainer.max_steps=100000", "stages.dpo.trainer.save_steps=100000",
                            "stages.dpo.resources.time=10", f"launcher.extra_sbatch=['--signal=USR1@{WARNING_SECONDS}']"),
                         env)
    limit_watch: dict = {}
    watcher = threading.Thread(target=cut_time_limit_once_training, args=(limited, limit_dir, limit_watch), daemon=True)
    watcher.start()

    first.wait_until(lambda: complete_checkpoint(run_dir, "dpo", SAVE_STEPS) and 1 in read_records(run_dir / "dpo"),
                     f"dpo checkpoint-{SAVE_STEPS}")
    victim = read_records(run_dir / "dpo")[1]
    out["victim"] = victim
    os.kill(victim.pid, signal.SIGKILL)  # rank 1's process on pt-node2, as the OOM killer would
    killed_at = time.time()
    out["first"] = (first.finish(), first.output, read_summary(run_dir))
    out["resumable_at_kill"] = StageDir(run_dir / "dpo").complete_checkpoints()[-1][0]  # SAVE_STEPS, or later
    out["seconds"]["kill_to_report"] = time.time() - killed_at
    out["dpo_manifest_after_kill"] = (run_dir / "dpo" / "manifest.json").exists()
    out["polish_after_kill"] = {p.name for p in (run_dir / "polish").iterdir()}

    second = Background(command, env)
    out["second"] = (second.finish(), second.output, read_summary(run_dir))
    out["seconds"]["story"] = time.time() - start

    watcher.join(300)
    out["limited"] = (limited.finish(), limited.output, read_summary(limit_dir))
    out["limit_watch"] = limit_watch
    out["seconds"]["cut_to_saved"] = limit_watch.get("saved_at", float("nan")) - limit_watch.get("cut_at", float("nan"))
    out["seconds"]["total"] = time.time() - start
    print(f"\ntwo-node story: {out['seconds']}")
    return out


def test_a_killed_rank_fails_the_stage_fast_and_downstream_never_starts(story):
    code, output, summary = story["first"]
    assert story["victim"].host == "pt-node2" and story["victim"].rank == 1
    assert code == 1, output[-3000:]
    assert summary["dpo"]["status"] == "failed", summary["dpo"]
    assert summary["polish"]["status"] == "cancelled" and "never ran" in summary["polish"]["reason"]
    assert not story["dpo_manifest_after_kill"]
    # polish's job never started: Slurm never opened its log, nothing trained or saved
    assert {"job.sbatch", "stage.yaml"} <= story["polish_after_kill"], story["polish_after_kill"]
    assert not story["polish_after_kill"] & {"stage.log", "ranks", "checkpoints", "model", "manifest.json"}
    # the surviving rank did not wait out a timeout: srun ended the step, the launcher reported it
    assert story["seconds"]["kill_to_report"] < 60, story["seconds"]


def test_the_same_command_resumes_on_both_nodes_and_the_chain_completes(story):
    code, output, summary = story["second"]
    assert code == 0, output[-4000:]
    resumed = story["resumable_at_kill"]
    assert f"resume from checkpoint-{resumed}" in output
    manifest = StageDir(story["run_dir"] / "dpo").read_manifest()
    assert manifest.extra["resumed_from"].endswith(f"checkpoint-{resumed}")
    assert manifest.world_size == 2 and manifest.metrics["global_step"] == DPO_STEPS
    steps = [int(s) for s in re.findall(r"^\[dpo\] step (\d+)/", output, re.M)]
    assert steps[0] == resumed + 1, steps  # continued, not restarted
    assert summary["polish"]["status"] == "completed"
    polish = StageDir(story["run_dir"] / "polish").read_manifest()
    assert polish.inputs["policy_init"] == os.path.realpath(story["run_dir"] / "dpo" / "model")  # its store entry


def test_both_nodes_ran_one_process_group_and_ended_with_identical_weights(story):
    ranks = read_records(story["run_dir"] / "dpo")
    assert sorted(ranks) == [0, 1]
    assert {r.host for r in ranks.values()} == set(NODES) and all(r.node == r.host for r in ranks.values())
    assert all(r.world_size == 2 and r.backend == "gloo" for r in ranks.values())
    assert all(r.global_step == DPO_STEPS for r in ranks.values())
    digests = {r.weights_digest for r in ranks.values()}
    assert len(digests) == 1 and None not in digests, ranks  # gradients were all-reduced


def test_the_saved_model_is_complete_and_loads_with_plain_from_pretrained(story):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.lib.models import weights_digest

    model_dir = story["run_dir"] / "dpo" / "model"
    manifest = StageDir(story["run_dir"] / "dpo").read_manifest()
    assert manifest.files and manifest.missing_files(str(model_dir)) == []
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    AutoTokenizer.from_pretrained(model_dir)
    saved = weights_digest(model.named_parameters())
    assert saved == read_records(story["run_dir"] / "dpo")[0].weights_digest  # what both ranks ended with
    assert saved != manifest.extra["initial_weights_digest"]  # and it trained


def test_mlflow_got_one_run_for_the_stage_across_both_attempts(story):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{story['db']}")
    experiment = client.get_experiment_by_name("two_nodes")
    runs = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'dpo'")
    assert len(runs) == 1, [r.info.run_id for r in runs]  # rank 1 never opened one; the resume continued it
    [run] = runs
    assert run.info.status == "FINISHED" and run.data.tags.get("posttrain.resumed") == "true"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert {m.step for m in losses} == set(range(1, DPO_STEPS + 1))  # the steps of both attempts, in one run


def test_the_time_limit_warning_checkpoints_and_the_stage_is_interrupted(story):
    if "error" in story["limit_watch"]:
        raise story["limit_watch"]["error"]
    code, output, summary = story["limited"]
    assert code == 1, output[-4000:]
    assert summary["dpo"]["status"] == "interrupted", summary["dpo"]
    saved = re.search(r"^\[dpo\] SIGUSR1: saved checkpoint-(\d+)", output, re.M)
    assert saved, output[-4000:]
    assert complete_checkpoint(story["limit_dir"], "dpo", int(saved.group(1)))
    assert summary["dpo"]["extra"]["exit_code"] == "143:0"  # it stopped itself, before the limit
    assert summary["polish"]["status"] == "cancelled"


def test_scancel_of_a_queued_chain_leaves_nothing_that_counts_as_done(tmp_path):
    ok, why = cluster_available()
    if not ok:
        pytest.skip(why)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [f"hydra.searchpath=[file://{ROOT / 'tests' / 'conf'}]", "+pipeline=two_nodes", f"run_dir={run_dir}",
            "launcher=slurm", "tracking=none", "launcher.extra_sbatch=['--hold']",  # held: queued until cancelled
            f"store_dir={tmp_path / 'store'}"]  # its own: the story's checkpoint would be cached
    submit = Background(on(HEAD, sys.executable, "-m", "workflows.run", *args), env)
    assert submit.finish(120) == 0, submit.output[-3000:]
    stages = ("checkpoint", "dpo", "polish")
    assert {s["status"] for s in read_summary(run_dir).values()} == {"submitted"}
    ids = [job_id(run_dir, s) for s in stages]
    assert all(job(i)["JobState"] == "PENDING" for i in ids)
    assert head("scancel", *ids).returncode == 0
    deadline = time.time() + 30
    while {job(i)["JobState"] for i in ids} != {"CANCELLED"}:
        assert time.time() < deadline, [job(i) for i in ids]
        time.sleep(0.2)

    assert not list(run_dir.rglob("manifest.json"))
    plan = Background(on(HEAD, sys.executable, "-m", "workflows.run", *args, "dry_run=true"), env)
    assert plan.finish(120) == 0, plan.output[-3000:]
    lines = {s: re.search(rf"^\s+\d+\. {s}\s+\[\w+\] (.*) --", plan.output, re.M) for s in stages}
    assert all(lines.values()), plan.output
    reasons = {s: m.group(1) for s, m in lines.items()}
    assert not any("cached" in r for r in reasons.values()), reasons  # every stage would run again

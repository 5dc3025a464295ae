"""The Slurm launcher against a real cluster (.ci/slurm/up.sh): chains, failures, resubmission."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_summary, run_cli
from tests.slurm_cluster import job_states, slurm_available, wait_for_jobs
from workflows.config import compose

_up, _why = slurm_available()
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.skipif(not _up, reason=_why)]


def lean(run_dir: Path, *keep: str) -> list[str]:
    """A tiny, fast sft_dpo on Slurm: only the `keep` stages, few rows and steps, no eval split, and a
    store of its own (what each test submits is then all it asked for, whatever ran before it)."""
    stages = compose(["+pipeline=sft_dpo"]).stages
    out = [f"run_dir={run_dir}", f"store_dir={run_dir.parent / 'store'}", "tracking=none", "launcher=slurm",
           "launcher.poll_seconds=1",
           *[f"stages.{n}.enabled=false" for n in stages if n not in keep]]
    for name in keep:
        # a private copy of the data: a re-run must find it unchanged, whatever else runs on this machine
        source = Path(compose(["+pipeline=sft_dpo"]).stages[name].data.sources[0].path)
        copy = run_dir.parent / "data" / source.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        out += [f"stages.{name}.data.sources.0.path={copy}",
                f"stages.{name}.data.sources.0.max_rows=64", f"stages.{name}.data.eval_sources=[]",
                f"stages.{name}.trainer.max_steps=3", f"stages.{name}.trainer.logging_steps=1",
                f"stages.{name}.trainer.per_device_train_batch_size=8"]
    return out


def job_ids(summary: dict[str, dict]) -> dict[str, str]:
    return {name: s["extra"]["job_id"] for name, s in summary.items() if "job_id" in s.get("extra", {})}


def test_sft_dpo_chain_completes_in_order_with_a_two_task_srun_stage(tmp_path: Path):
    run_dir = tmp_path / "run"
    overrides = [*lean(run_dir, "sft", "dpo"), "launcher.wait=true",
                 "stages.sft.resources.runner=srun", "stages.sft.resources.processes_per_node=2"]
    result = run_cli("+pipeline=sft_dpo", *overrides, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert {n: s["status"] for n, s in summary.items()} == {"checkpoint": "completed", "sft": "completed",
                                                            "dpo": "completed"}
    ids = job_ids(summary)
    for name, job_id in ids.items():
        assert f"==> {name}: submitted job {job_id}" in result.stdout
    jobs = wait_for_jobs(ids.values(), timeout=60)
    assert {jobs[i]["state"] for i in ids.values()} == {"COMPLETED"}
    # each job started only after its upstream ended (afterok), and was submitted with that dependency
    assert jobs[ids["sft"]]["start"] >= jobs[ids["checkpoint"]]["end"]
    assert jobs[ids["dpo"]]["start"] >= jobs[ids["sft"]]["end"]
    assert json.loads((run_dir / "dpo" / "job.json").read_text())["dependencies"] == [ids["sft"]]
    # SFT ran as 2 Slurm tasks, one training process each, and DPO trained from its output
    sft, dpo = (json.loads((run_dir / n / "manifest.json").read_text()) for n in ("sft", "dpo"))
    assert sft["world_size"] == 2 and dpo["world_size"] == 1
    assert dpo["inputs"]["policy_init"] == os.path.realpath(run_dir / "sft" / "model")  # the store entry
    assert dpo["initial_weights_digest"] != sft["initial_weights_digest"]
    assert "[sft] step 3/3" in (run_dir / "sft" / "stage.log").read_text()  # the job's log is the stage's log

    again = run_cli("+pipeline=sft_dpo", *overrides, timeout=300)  # all complete: nothing is submitted
    assert again.returncode == 0, again.stderr
    assert "submitted job" not in again.stdout, again.stdout
    assert {s["status"] for s in read_summary(run_dir).values()} == {"cached"}


def test_a_failed_stage_cancels_its_dependents_which_never_run(tmp_path: Path):
    run_dir = tmp_path / "run"
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()  # shaped like a model folder, so the plan accepts it; loading it fails in the job
    for file in ("config.json", "model.safetensors"):
        (not_a_model / file).write_text("not what it claims to be")
    shutil.copytree(ROOT / "demo" / "tiny_tokenizer", not_a_model, dirs_exist_ok=True)  # the plan reads this
    pwned = tmp_path / "pwned"
    result = run_cli("+pipeline=sft_dpo", *lean(run_dir, "sft", "dpo"), "launcher.wait=true",
                     f"stages.sft.policy={not_a_model}", f"launcher.job_name_prefix='x; touch {pwned}'",
                     timeout=600)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["sft"]["status"] == "failed" and "FAILED" in summary["sft"]["reason"]
    assert summary["dpo"]["status"] == "cancelled"
    assert "never ran: upstream 'sft' failed" in summary["dpo"]["reason"]
    assert "DependencyNeverSatisfied" in summary["dpo"]["reason"]
    assert "dpo: never ran: upstream 'sft' failed" in result.stdout  # the console summary says so too
    ids = job_ids(summary)
    states = wait_for_jobs(ids.values(), timeout=60)
    assert states[ids["sft"]]["state"] == "FAILED"
    assert states[ids["dpo"]]["state"] == "CANCELLED"
    assert states[ids["dpo"]]["reason"] == "DependencyNeverSatisfied"
    assert not (run_dir / "dpo" / "stage.log").exists()  # its job never started: not a line of output
    assert not (run_dir / "dpo" / "manifest.json").exists()
    names = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobName", "-j", ",".join(ids.values())],
                           capture_output=True, text=True).stdout.split("\n")
    assert f"x; touch {pwned}-sft_dpo-dpo" in names  # the hostile prefix reached Slurm as a name...
    assert not pwned.exists()  # ...and nothing ran it


def test_a_queued_chain_is_not_submitted_twice(tmp_path: Path):
    run_dir = tmp_path / "run"
    held = [*lean(run_dir, "sft", "dpo"), "launcher.extra_sbatch=['--begin=now+3600']"]  # stays PENDING
    first = run_cli("+pipeline=sft_dpo", *held, timeout=300)
    ids = job_ids(read_summary(run_dir)) if (run_dir / "summary.json").exists() else {}
    try:
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert {s["status"] for s in read_summary(run_dir).values()} == {"submitted"}
        assert {r["state"] for r in job_states(ids.values()).values()} == {"PENDING"}
        # `posttrain status` asks the scheduler (through the launcher) about each stage's job
        status = subprocess.run([sys.executable, "-m", "workflows.status", str(run_dir), "--json"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        stages = {s["name"]: s for s in json.loads(status.stdout)["stages"]}
        for name in ("sft", "dpo"):
            assert stages[name]["status"] == "queued" and stages[name]["job"]["job_id"] == ids[name]
            assert stages[name]["detail"].startswith(f"Slurm job {ids[name]} PENDING (")

        second = run_cli("+pipeline=sft_dpo", *held, timeout=300)
        assert second.returncode == 0, second.stderr
        for name, job_id in ids.items():
            assert f"==> {name}: already queued as job {job_id}" in second.stdout
        assert "submitted job" not in second.stdout

        # Another beta is another store entry: a job of its own, after the SFT job still queued; the
        # first DPO variant's entry and job are left as they were (nothing is overwritten).
        first_dpo = os.path.realpath(run_dir / "dpo")
        changed = run_cli("+pipeline=sft_dpo", *held, "stages.dpo.trainer.beta=0.5", timeout=300)
        assert changed.returncode == 0, changed.stderr
        new_ids = job_ids(read_summary(run_dir))
        ids["dpo-0.5"] = new_ids["dpo"]
        assert f"==> sft: already queued as job {ids['sft']}" in changed.stdout
        assert new_ids["dpo"] != ids["dpo"] and os.path.realpath(run_dir / "dpo") != first_dpo
        assert json.loads((run_dir / "dpo" / "job.json").read_text())["dependencies"] == [ids["sft"]]
        assert json.loads(Path(first_dpo, "job.json").read_text())["job_id"] == ids["dpo"]
        assert {r["state"] for r in job_states([ids["dpo"], new_ids["dpo"]]).values()} == {"PENDING"}
    finally:
        if ids:
            subprocess.run(["scancel", *ids.values()], check=False)


def test_a_sweep_submits_the_shared_sft_once_and_each_dpo_variant_after_it(tmp_path: Path):
    overrides = [o for o in lean(tmp_path / "run", "sft", "dpo") if not o.startswith("run_dir=")]  # a run_dir each
    result = run_cli("-m", "+pipeline=sft_dpo", *overrides, "launcher.wait=true", "stages.dpo.trainer.beta=0.05,0.2",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=900)
    variants = [read_summary(tmp_path / "sweep" / n) for n in ("0", "1")]
    ids = [job_ids(v) for v in variants]
    every = sorted({i for v in ids for i in v.values()})
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for summary in variants:  # launcher.wait followed every variant's jobs to their end
            assert {s["status"] for s in summary.values()} <= {"completed", "cached"}
            assert summary["dpo"]["status"] == "completed"
        # the second variant reuses the SFT job: still queued ("already queued as job N"), or, when that job
        # already runs and holds its entry, waited for and then cached; either way it is submitted once
        assert result.stdout.count("==> sft: submitted job") == 1, result.stdout[-3000:]
        assert ids[1].get("sft", ids[0]["sft"]) == ids[0]["sft"] and ids[1]["dpo"] != ids[0]["dpo"]
        assert len(every) == 4, ids  # checkpoint, sft, and one dpo per variant
        wait_for_jobs(every, timeout=60)
        lines = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,JobName,State,Start,End,SubmitLine",
                                "-j", ",".join(every)], capture_output=True, text=True, check=True).stdout.splitlines()
        sacct = {f[0]: f[1:] for f in (line.split("|", 5) for line in lines)}
        assert sorted(name.rsplit("-", 1)[1] for name, *_ in sacct.values()) == ["checkpoint", "dpo", "dpo", "sft"]
        assert {state for _, state, *_ in sacct.values()} == {"COMPLETED"}
        sft_end = sacct[ids[0]["sft"]][3]
        for variant, summary in zip(ids, variants):
            _, _, start, _, submit_line = sacct[variant["dpo"]]
            assert start >= sft_end, (start, sft_end)  # every DPO job ran after the one SFT job (ISO times)
            if "sft" in variant:  # submitted while the SFT job was queued: with afterok on it
                assert f"--dependency=afterok:{ids[0]['sft']} " in submit_line
            else:  # the SFT job was already running: the variant waited for it, found it cached, needed no afterok
                assert summary["sft"]["status"] == "cached" and "--dependency" not in submit_line
        assert f"--dependency=afterok:{ids[0]['checkpoint']} " in sacct[ids[0]["sft"]][4]
        dpo_dirs = {v["dpo"]["output_dir"] for v in variants}
        assert len(dpo_dirs) == 2 and len({v["sft"]["output_dir"] for v in variants}) == 1
        assert "stages.dpo.trainer.beta  0.05" in result.stdout  # the sweep table, once both are done
    finally:
        if every:
            subprocess.run(["scancel", *every], check=False)

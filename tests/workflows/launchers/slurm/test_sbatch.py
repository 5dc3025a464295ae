"""The sbatch scripts the Slurm launcher writes: golden files, and hostile values kept inert.

Regenerate the golden files after an intended change: POSTTRAIN_REGEN_GOLDEN=1 python -m pytest tests/workflows/launchers/slurm/test_sbatch.py
(then read the diff: every line of it reaches a cluster).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, run_cli
from workflows.config import compose
from workflows.launchers.slurm import launcher as slurm
from workflows.launchers.slurm import sbatch
from workflows.planning import build_plan

GOLDEN = ROOT / "tests" / "golden"
REGEN = os.environ.get("POSTTRAIN_REGEN_GOLDEN") == "1"
HOSTILE_NAME = "x; rm -rf ~"  # refused as a pipeline name (posttrain/names.py); still a value below

CLUSTER = ["launcher=slurm", "tracking=none", "launcher.python=/opt/venv/bin/python", "store_dir=/runs/store",
           "launcher.partition=gpu", "launcher.account=llm-team", "launcher.qos=high", "launcher.time=04:00:00",
           "launcher.cpus_per_task=32", "launcher.mem=0", "launcher.constraint=h100",
           "launcher.extra_sbatch=[--exclusive,'--mail-type=FAIL']",
           "launcher.setup=['module load cuda/12.4','source /opt/venv/bin/activate']"]


def plan_for(overrides: list[str], edits: dict[str, Any] | None = None, pipeline: str = "sft_dpo"):
    """Compose like the CLI, then set `edits` (dotted keys) on the plain config: values Hydra's
    override grammar cannot spell (quotes, backslashes) reach the planner as they would from YAML."""
    cfg = compose([f"+pipeline={pipeline}", *overrides])
    stages = [n for n in cfg.stages if n not in ("sft", "dpo")]  # other stages a pipeline may grow
    cfg = OmegaConf.to_container(compose([f"+pipeline={pipeline}", *overrides,
                                          *[f"stages.{n}.enabled=false" for n in stages]]), resolve=True)
    for key, value in (edits or {}).items():
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return build_plan(cfg)


def normalized(text: str) -> str:
    return text.replace(str(ROOT), "<ROOT>").replace(os.path.expanduser("~"), "<HOME>")


CASES: dict[str, tuple[list[str], dict[str, Any], str]] = {
    # the DPO stage of sft_dpo on 2 nodes x 8 GPUs under ZeRO-3
    "dpo_2x8_zero3": ([*CLUSTER, "run_dir=/runs/sft_dpo", "stages.dpo.resources.nodes=2",
                       "stages.dpo.resources.processes_per_node=8", "stages.dpo.resources.gpus_per_node=8",
                       "+deepspeed@stages.dpo.deepspeed=zero3"], {}, "dpo"),
    "sft_1_process": ([*CLUSTER, "run_dir=/runs/sft_dpo"], {}, "sft"),
    "sft_srun_2_tasks": (["launcher=slurm", "tracking=none", "launcher.python=/opt/venv/bin/python",
                          "run_dir=/runs/sft_dpo", "stages.sft.resources.runner=srun",
                          "stages.sft.resources.processes_per_node=2"], {}, "sft"),
    "hostile_values": (["launcher=slurm", "launcher.python=/opt/venv/bin/python", "tracking=none"], {
        "name": "x-rm-rf", "run_dir": "/runs/x; rm -rf ~/$(id) `id` 'q' \"q\"",
        "launcher.partition": "gpu$(reboot)", "launcher.job_name_prefix": f'it\'s "q" \\ $HOME {HOSTILE_NAME}',
        "launcher.env": {"WANDB_MODE": "$(touch /tmp/pwned) 'q'"}, "launcher.extra_sbatch": ["--comment=a; b"],
    }, "dpo"),
    "apptainer_8_gpus": ([*CLUSTER, "run_dir=/runs/sft_dpo", "stages.dpo.resources.gpus_per_node=8",
                          "launcher.container.image=/shared/images/posttrain.sif",
                          "launcher.container.hf_cache=/scratch/hf", "launcher.container.torch_extensions=/scratch/ext",
                          "launcher.container.mounts=['/datasets:/datasets:ro','/scratch/triton:/cache/triton']",
                          "launcher.container.args=[--writable-tmpfs]"], {}, "dpo"),
    "pyxis_deepspeed_2_nodes": ([*CLUSTER, "run_dir=/runs/sft_dpo", "stages.dpo.resources.nodes=2",
                                 "stages.dpo.resources.gpus_per_node=4", "stages.dpo.resources.runner=deepspeed",
                                 "launcher.container.image='registry.example.org#team/posttrain:0.1.0'",
                                 "launcher.container.runtime=pyxis", "launcher.container.hf_cache=/scratch/hf",
                                 "launcher.container.torch_extensions=null", "launcher.container.mount_code=true",
                                 "tracking=mlflow", "tracking.uri=sqlite:////srv/mlflow/mlflow.db"], {}, "dpo"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_script(case: str):
    overrides, edits, stage = CASES[case]
    plan = plan_for(overrides, edits)
    text = normalized(sbatch.render(plan, plan.stage(stage), slurm._upstream_jobs(plan, plan.stage(stage))))
    path = GOLDEN / f"{case}.sbatch"
    if REGEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with POSTTRAIN_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs; if intended, regenerate with POSTTRAIN_REGEN_GOLDEN=1"


def test_dry_run_prints_every_script_and_submits_nothing(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_cli("+pipeline=sft_dpo", "launcher=slurm", "dry_run=true", "tracking=none", f"run_dir={run_dir}",
                     "stages.dpo.resources.nodes=2", "stages.dpo.resources.gpus_per_node=8")
    assert result.returncode == 0, result.stderr
    store = Path(os.environ["POSTTRAIN_STORE_DIR"]).resolve()
    for stage in ("checkpoint", "sft", "dpo"):  # each stage's folder is its store entry: <store>/<type>/<fingerprint>
        assert re.search(rf"==> {re.escape(str(store))}/{stage}/[0-9a-f]{{64}}/job.sbatch", result.stdout)
        assert not (run_dir / stage).exists() and not (store / stage).exists()
    assert "#SBATCH --dependency" not in result.stdout  # ids exist only at submission: on sbatch's command line
    assert "sbatch --parsable --dependency=afterok:<job of sft> --kill-on-invalid-dep=yes" in result.stdout


def sbatch_words(line: str) -> list[str]:
    """How sbatch splits an #SBATCH line (src/sbatch/opt.c): a backslash escapes the next character
    anywhere, quotes group and are removed, whitespace separates."""
    words, word, quote, escape, started = [], "", None, False, False
    for ch in line:
        if escape:
            word, escape, started = word + ch, False, True
        elif ch == "\\":
            escape = True
        elif quote:
            if ch == quote:
                quote = None
            else:
                word += ch
        elif ch in "\"'":
            quote, started = ch, True
        elif ch.isspace():
            if started or word:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + ch, True
    if started or word:
        words.append(word)
    return words


def test_hostile_values_reach_sbatch_as_they_are():
    overrides, edits, stage = CASES["hostile_values"]
    plan = plan_for(overrides, edits)
    options = {}
    for line in sbatch.render(plan, plan.stage(stage)).splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = sbatch_words(line[len("#SBATCH "):])[0].partition("=")
            options[key] = value
    assert options["--job-name"] == f'it\'s "q" \\ $HOME {HOSTILE_NAME}-x-rm-rf-dpo'
    assert options["--partition"] == "gpu$(reboot)"
    assert options["--output"] == edits["run_dir"] + "/dpo/stage.log"
    assert options["--comment"] == "a; b"


def _fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_script(script: str, tmp_path: Path, nodes: int = 1) -> list[list[str]]:
    """Run a job script with fake srun/scontrol/python: srun runs its command once per node (as
    SLURM_NODEID=<i>), python records its argv and the variables a stage reads. Returns the argvs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv"
    _fake(bin_dir, "scontrol", "printf 'node-a\\nnode-b\\n'\n")
    _fake(bin_dir, "srun", f"""while [[ "$1" == --* ]]; do shift; done
for ((i = 0; i < {nodes}; i++)); do SLURM_NODEID=$i "$@"; done
""")
    _fake(bin_dir, "python", f"""printf '%s\\0' "$@" "WANDB_MODE=$WANDB_MODE" >> {record}; printf '\\n' >> {record}
""")
    script = script.replace("/opt/venv/bin/python", str(bin_dir / "python"))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node-[a-b]",
           "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [line.rstrip("\0").split("\0") for line in record.read_text().split("\0\n") if line.strip("\0\n")]


def test_hostile_values_stay_inert_when_the_script_runs(tmp_path: Path):
    overrides, edits, stage = CASES["hostile_values"]
    pwned = tmp_path / "pwned"
    edits = {**edits, "launcher.env": {"WANDB_MODE": f"$(touch {pwned}) 'q'"}}
    plan = plan_for(overrides, edits)
    [argv] = run_script(sbatch.render(plan, plan.stage(stage)), tmp_path)
    assert argv[-2:] == [edits["run_dir"] + "/dpo/stage.yaml", f"WANDB_MODE=$(touch {pwned}) 'q'"]
    assert not pwned.exists()
    assert not (tmp_path / "$(id)").exists()


def test_multi_node_commands_expand_per_node(tmp_path: Path):
    overrides, edits, stage = CASES["pyxis_deepspeed_2_nodes"]
    run_dir = tmp_path / "a b; $(id)"
    (run_dir / "dpo").mkdir(parents=True)
    overrides = [o for o in overrides if not o.startswith("launcher.container")] + ["launcher.setup=[]"]
    plan = plan_for(overrides, {**edits, "run_dir": str(run_dir)})
    argvs = run_script(sbatch.render(plan, plan.stage(stage)), tmp_path, nodes=2)
    assert [a[a.index("--node_rank") + 1] for a in argvs] == ["0", "1"]
    first = argvs[0]
    assert first[first.index("--master_addr") + 1] == "node-a"
    assert first[first.index("--master_port") + 1] == str(20000 + 4242 % 20000)
    hostfile = first[first.index("--hostfile") + 1]
    assert hostfile == f"{run_dir}/dpo/hostfile-4242"
    assert Path(hostfile).read_text() == "node-a slots=4\nnode-b slots=4\n"
    assert first[-3:-1] == ["stages.dpo", f"{run_dir}/dpo/stage.yaml"]


def test_container_binds_what_the_stage_reads_at_the_same_path():
    plan = plan_for(CASES["apptainer_8_gpus"][0])
    mounts = sbatch.container_mounts(plan, plan.stage("dpo"))
    assert "/runs/sft_dpo:/runs/sft_dpo" in mounts  # policy, reference and outputs live under run_dir
    data_dir = os.path.dirname(plan.stage("dpo").spec.data.sources[0].path)
    assert any(m.split(":")[0] in (data_dir, str(ROOT)) and m.split(":")[0] == m.split(":")[1] for m in mounts)
    assert "/scratch/hf:/cache/huggingface" in mounts and "/datasets:/datasets:ro" in mounts
    hosts = [m.split(":")[0] for m in mounts[:-4]]
    assert not any(a != b and b.startswith(a + "/") for a in hosts for b in hosts), "nested binds"


def test_golden_files_have_no_machine_paths():
    for path in GOLDEN.glob("*.sbatch"):
        text = path.read_text()
        assert not re.search(r"/root/|/home/|/work/", text), path


def test_job_outcomes_become_stage_results(tmp_path: Path):
    """What `launcher.wait` reports for each way a job can end (Slurm's records are given here)."""
    import json as _json

    from workflows.launchers.slurm.jobs import Job

    plan = plan_for(["launcher=slurm", "tracking=none", f"run_dir={tmp_path}"])
    sft, dpo = plan.stage("sft"), plan.stage("dpo")
    (tmp_path / "sft").mkdir()
    failed = slurm._job_result(plan, sft, "7", Job("7", "FAILED", exit_code="1:0"), {})
    assert failed.status == "failed" and failed.reason.startswith("Slurm job 7 FAILED (exit code 1:0)")
    assert failed.extra["job_id"] == "7"
    cancelled = slurm._job_result(plan, dpo, "8", Job("8", "CANCELLED", "DependencyNeverSatisfied"), {"sft": failed})
    assert cancelled.status == "cancelled"
    assert cancelled.reason == "never ran: upstream 'sft' failed; Slurm cancelled job 8 (DependencyNeverSatisfied)"
    by_hand = slurm._job_result(plan, dpo, "8", Job("8", "CANCELLED", "None"), {})
    assert by_hand.status == "cancelled" and "was cancelled" in by_hand.reason
    no_manifest = slurm._job_result(plan, sft, "7", Job("7", "COMPLETED", exit_code="0:0"), {})
    assert no_manifest.status == "failed" and "without the stage writing its manifest" in no_manifest.reason
    (tmp_path / "sft" / "manifest.json").write_text(_json.dumps({"metrics": {"train_loss": 1.5}}))
    done = slurm._job_result(plan, sft, "7", Job("7", "COMPLETED", start="2026-01-01T00:00:00",
                                                     end="2026-01-01T00:01:30", exit_code="0:0"), {})
    assert (done.status, done.metrics, done.wall_seconds) == ("completed", {"train_loss": 1.5}, 90.0)
    timeout = slurm._job_result(plan, sft, "7", Job("7", "TIMEOUT", exit_code="0:15"), {})
    assert timeout.status == "interrupted" and "run the same command again to resume" in timeout.reason
    (tmp_path / "dpo").mkdir()
    (tmp_path / "dpo" / "gated.json").write_text(_json.dumps({"reason": "gate sft/train_loss=1.5 > max 1"}))
    gated = slurm._job_result(plan, dpo, "8", Job("8", "FAILED", exit_code="3:0"), {"sft": done})
    assert (gated.status, gated.reason) == ("gated", "gate sft/train_loss=1.5 > max 1")


def test_complete_stages_are_not_submitted_and_nothing_waits_for_them():
    plan = plan_for(["launcher=slurm", "tracking=none", "run_dir=/runs/sft_dpo"])
    for name in ("checkpoint", "sft"):
        plan.stage(name).reason = "cached"  # as workflows/state/decide.py decides from the manifests
    text = slurm.dry_run(plan)
    assert "/sft/job.sbatch" not in text and "/checkpoint/job.sbatch" not in text
    assert "==> /runs/sft_dpo/dpo/job.sbatch" in text
    assert "--dependency" not in text and "after sft" not in text
    plan.stage("dpo").reason = "cached"
    assert slurm.dry_run(plan).strip() == "Nothing to submit: every stage is complete."


def test_a_job_holds_its_store_entry_while_it_runs(tmp_path: Path):
    """The lines a decided stage's script runs before srun take the entry's lock: a job waits while
    another run holds it (here: this test), as a local run would."""
    from workflows.state.decide import decide
    from workflows.state.lock import hold_entry, release_entry
    from workflows.store.views import store_of

    plan = decide(plan_for(["launcher=slurm", "tracking=none", f"run_dir={tmp_path / 'run'}"]))
    stage = plan.stage("sft")
    text = sbatch.render(plan, stage, [])
    lock = store_of(plan).lock_file(Path(stage.stage_dir))
    start = text.index("exec 9>>")
    assert text.index(f"exec 9>>{lock}") == start < text.index("srun ")
    prelude = text[start:text.index("srun ")]
    hold_entry(lock, exclusive=True)
    try:
        blocked = subprocess.run(["timeout", "3", "bash", "-c", prelude + "echo ran"], capture_output=True, text=True)
        assert blocked.returncode == 124 and "ran" not in blocked.stdout  # waited for the holder...
        assert "==>" not in blocked.stdout  # ...and did not say it started
    finally:
        release_entry(lock)
    free = subprocess.run(["bash", "-c", prelude + "echo ran"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "SLURM_JOB_ID": "42"})
    assert free.returncode == 0, free.stderr
    opened, ran = free.stdout.splitlines()  # the attempt's line once it holds the entry, then the stage
    assert re.fullmatch(rf"==> \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d sft \[sft\] \(new\), started for run_dir "
                        rf"{re.escape(str(tmp_path / 'run'))}", opened), opened
    assert ran == "ran"
    assert json.loads(lock.read_text())["command"] == "Slurm job 42"  # whoever waits next is told who holds it

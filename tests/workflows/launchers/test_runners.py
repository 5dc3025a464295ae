"""How stages start (python, torchrun, deepspeed, srun) and the plan-time checks of resources and launchers."""

from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from tests.conftest import run_cli
from workflows.launchers.runners import ShellVar, resolve_resources, shell_join, stage_command
from workflows.config import compose
from workflows.planning import PlanError, build_plan


def plan_of(*overrides: str, pipeline: str = "sft_dpo"):
    return build_plan(compose([f"+pipeline={pipeline}", "tracking=none", *overrides]))


def problems(*overrides: str) -> list[str]:
    with pytest.raises(PlanError) as err:
        plan_of(*overrides)
    return err.value.problems


def test_resources_default_to_one_process_per_gpu_and_the_launchers_settings():
    launcher = {"gpus_per_node": 8, "time": "04:00:00"}
    assert resolve_resources({}, launcher) == {"runner": "torchrun", "nodes": 1, "processes_per_node": 8,
                                               "gpus_per_node": 8, "time": "04:00:00"}
    one = resolve_resources({"gpus_per_node": 0, "time": "00:10:00"}, launcher)
    assert (one["runner"], one["processes_per_node"], one["time"]) == ("python", 1, "00:10:00")
    assert resolve_resources({"processes_per_node": 2}, {})["runner"] == "torchrun"


def test_single_node_torchrun_picks_its_own_port():
    argv = stage_command({"runner": "torchrun", "processes_per_node": 2}, "stages.sft", "/r/sft/stage.yaml", "py")
    assert argv == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "stages.sft", "/r/sft/stage.yaml"]


def test_multi_node_torchrun_meets_on_the_first_host():
    argv = stage_command({"nodes": 2, "processes_per_node": 8}, "stages.dpo", "/r/dpo/stage.yaml", "py")
    i = argv.index("--rdzv_endpoint")
    assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--rdzv_backend") + 1] == "c10d"
    assert isinstance(argv[i + 1], ShellVar) and argv[i + 1] == "$HEAD_NODE:$MASTER_PORT"
    # in a script the rendezvous expands, the config path does not
    line = shell_join([*argv[:-1], "/r/x; rm -rf ~/stage.yaml"])
    assert '"$HEAD_NODE:$MASTER_PORT"' in line and "'/r/x; rm -rf ~/stage.yaml'" in line


def test_deepspeed_runner_passes_no_local_rank_argument():
    argv = stage_command({"runner": "deepspeed", "processes_per_node": 2}, "stages.sft", "/s.yaml", "py")
    assert argv[:4] == ["py", "-m", "deepspeed.launcher.runner", "--no_local_rank"]
    assert argv[-3:] == ["--module", "stages.sft", "/s.yaml"]
    multi = stage_command({"runner": "deepspeed", "nodes": 2, "processes_per_node": 8}, "stages.sft", "/s.yaml", "py")
    assert "--no_ssh" in multi and multi[multi.index("--node_rank") + 1] == "$SLURM_NODEID"


def test_the_plan_carries_resolved_resources_and_the_command():
    plan = plan_of("stages.sft.resources.processes_per_node=2", "+deepspeed@stages.dpo.deepspeed=zero3")
    sft, dpo = plan.stage("sft"), plan.stage("dpo")
    assert sft.spec["resources"]["runner"] == "torchrun" and "--standalone" in sft.command
    assert dpo.spec["deepspeed"]["zero_optimization"]["stage"] == 3 and sft.spec["deepspeed"] is None
    assert plan.stage("checkpoint").spec["resources"]["gpus_per_node"] == 0


def test_a_stage_picks_its_own_deepspeed_over_the_pipelines():
    plan = plan_of("deepspeed=zero2", "+deepspeed@stages.dpo.deepspeed=zero3_offload")
    assert plan.stage("sft").spec["deepspeed"]["zero_optimization"]["stage"] == 2
    offload = plan.stage("dpo").spec["deepspeed"]["zero_optimization"]
    assert offload["stage"] == 3 and offload["offload_param"]["device"] == "cpu"


def test_what_cannot_start_locally_is_refused_at_plan_time():
    found = problems("stages.dpo.resources.nodes=2", "stages.sft.resources.runner=srun",
                     "stages.sft.resources.processes_per_node=2")
    assert any(p.startswith("stages.dpo.resources.nodes: 2 nodes need a scheduler") for p in found), found
    assert any(p.startswith("stages.sft.resources.runner: srun starts one Slurm task per process") for p in found)


def test_bad_resources_name_their_key():
    found = problems("stages.sft.resources.runner=mpirun", "stages.dpo.resources.runner=python",
                     "stages.dpo.resources.processes_per_node=4", "launcher=slurm")
    assert any(p.startswith("stages.sft.resources.runner: unknown runner 'mpirun'") for p in found), found
    assert any(p.startswith("stages.dpo.resources.runner: python starts one process") for p in found), found


def test_slurm_settings_are_checked_before_anything_is_submitted():
    found = problems("launcher=slurm", "launcher.time=4h", "stages.sft.resources.time=1-xx",
                     "launcher.extra_sbatch=[exclusive]", "launcher.output='{stage_dir}/{job}.out'",
                     "launcher.container.runtime=docker", "launcher.env.BAD-NAME=1")
    assert "launcher.time: '4h' is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)" in found
    assert any(p.startswith("stages.sft.resources.time: '1-xx'") for p in found)
    assert any(p.startswith("launcher.extra_sbatch[0]: 'exclusive' is not an sbatch option") for p in found)
    assert any(p.startswith("launcher.output: unknown placeholder '{job}'") for p in found)
    assert any(p.startswith("launcher.container.runtime: 'docker'") for p in found)
    assert "launcher.env.BAD-NAME: not a valid environment variable name" in found


def test_container_paths_must_fit_a_bind_spec():
    found = problems("launcher=slurm", "launcher.container.image=/img/p.sif", "run_dir='/runs/a,b'")
    assert any(p.startswith("run_dir: '/runs/a,b' holds ',' or ':'") for p in found), found


def test_a_line_break_never_reaches_a_job_script():
    cfg = OmegaConf.to_container(compose(["+pipeline=sft_dpo", "tracking=none", "launcher=slurm"]), resolve=True)
    cfg["launcher"]["partition"] = "gpu\n#SBATCH --uid=0"  # e.g. a YAML block string
    cfg["launcher"]["setup"] = ["module load cuda", "echo a\necho b"]
    with pytest.raises(PlanError) as err:
        build_plan(cfg)
    assert any(p.startswith("launcher.partition: contains a line break") for p in err.value.problems)
    assert any(p.startswith("launcher.setup[1]: contains a line break") for p in err.value.problems)


def test_the_local_launcher_ignores_cluster_settings():
    """conf/local/ may hold a cluster's settings; running on this machine must still work."""
    plan = plan_of("launcher.container.image=/img/posttrain.sif", "launcher.partition=gpu", "launcher.time=4h")
    assert plan.stage("sft").command[:3] == [sys.executable, "-m", "stages.sft"]


def test_deepspeed_settings_that_would_fail_at_runtime():
    found = problems("+deepspeed@stages.dpo.deepspeed=zero3",
                     "stages.dpo.deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save=false",
                     "deepspeed=zero2", "deepspeed.bf16.enabled=true", "stages.sft.trainer.bf16=false")
    assert any(p.startswith("stages.dpo.deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save: "
                            "must be true") for p in found), found
    assert any(p.startswith("stages.sft.deepspeed.bf16.enabled: True disagrees with stages.sft.trainer.bf16=False")
               for p in found), found


def test_problems_exit_2_without_traceback():
    result = run_cli("+pipeline=sft_dpo", "dry_run=true", "stages.dpo.resources.nodes=2")
    assert result.returncode == 2, result.stderr
    assert "stages.dpo.resources.nodes: 2 nodes need a scheduler" in result.stderr
    assert "Traceback" not in result.stderr

"""How stages start (python, torchrun, deepspeed, srun): resolved resources and the argv of each runner.

The plan-time checks of resources and launchers are in test_checks.py.
"""

from __future__ import annotations

import pytest

from workflows.config import compose
from workflows.launchers.runners import (
    ShellVar,
    resolve_resources,
    shell_join,
    stage_command,
)
from workflows.launchers.slurm.sbatch import RENDEZVOUS
from workflows.planning import build_plan


def plan_of(*overrides: str, pipeline: str = "sft_dpo"):
    return build_plan(compose([f"+pipeline={pipeline}", "tracking=none", *overrides]))


def test_resources_default_to_one_process_per_gpu_and_the_launchers_settings():
    launcher = {"gpus_per_node": 8, "time": "04:00:00"}
    assert resolve_resources({}, launcher) == {"runner": "torchrun", "nodes": 1, "processes_per_node": 8,
                                               "gpus_per_node": 8, "time": "04:00:00"}
    one = resolve_resources({"gpus_per_node": 0, "time": "00:10:00"}, launcher)
    assert (one["runner"], one["processes_per_node"], one["time"]) == ("python", 1, "00:10:00")
    assert resolve_resources({"processes_per_node": 2}, {})["runner"] == "torchrun"


def test_single_node_torchrun_picks_its_own_port():
    argv = stage_command({"runner": "torchrun", "processes_per_node": 2}, "stages.sft", "/r/sft/stage.yaml", "py")
    assert argv == ["py", "-m", "stages.lib.torchrun", "--standalone", "--nproc_per_node", "2",
                    "-m", "stages.sft", "/r/sft/stage.yaml"]


def test_multi_node_torchrun_meets_on_the_first_host():
    argv = stage_command({"nodes": 2, "processes_per_node": 8}, "stages.dpo", "/r/dpo/stage.yaml", "py", RENDEZVOUS)
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
    multi = stage_command({"runner": "deepspeed", "nodes": 2, "processes_per_node": 8}, "stages.sft", "/s.yaml", "py",
                          RENDEZVOUS)
    assert "--no_ssh" in multi and multi[multi.index("--node_rank") + 1] == "$SLURM_NODEID"


def test_the_plan_carries_resolved_resources_and_the_command():
    plan = plan_of("stages.sft.resources.processes_per_node=2", "+deepspeed@stages.dpo.deepspeed=zero3")
    sft, dpo = plan.stage("sft"), plan.stage("dpo")
    assert sft.spec.resources.runner == "torchrun" and "--standalone" in sft.command
    assert dpo.spec.deepspeed["zero_optimization"]["stage"] == 3 and sft.spec.deepspeed is None
    assert plan.stage("checkpoint").spec.resources.gpus_per_node == 0


def test_a_stage_picks_its_own_deepspeed_over_the_pipelines():
    plan = plan_of("deepspeed=zero2", "+deepspeed@stages.dpo.deepspeed=zero3_offload")
    assert plan.stage("sft").spec.deepspeed["zero_optimization"]["stage"] == 2
    offload = plan.stage("dpo").spec.deepspeed["zero_optimization"]
    assert offload["stage"] == 3 and offload["offload_param"]["device"] == "cpu"


@pytest.mark.parametrize("runner", ["torchrun", "deepspeed"])
def test_several_nodes_need_a_launchers_rendezvous(runner):
    with pytest.raises(ValueError, match="2 nodes need a launcher with a rendezvous"):
        stage_command({"runner": runner, "nodes": 2, "processes_per_node": 8}, "stages.sft", "/s.yaml", "py")

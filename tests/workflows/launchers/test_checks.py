"""Plan-time checks of how and where stages start (workflows/launchers/__init__.py `launch_problems`,
checks.py, slurm/checks.py): every problem named by its key before anything runs."""

from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from tests.conftest import run_cli
from workflows.config import compose
from workflows.planning import PlanError, build_plan


def plan_of(*overrides: str, pipeline: str = "sft_dpo"):
    return build_plan(compose([f"+pipeline={pipeline}", "tracking=none", *overrides]))


def problems(*overrides: str) -> list[str]:
    with pytest.raises(PlanError) as err:
        plan_of(*overrides)
    return err.value.problems


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

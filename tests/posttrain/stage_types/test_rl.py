"""`grpo`/`rloo` and `reward` stages at plan time: the fan-in DAG, the KL reference, the rewards
block's checks (unknown functions, reward models that are not a `reward` stage's output, prompts
without answers), all reported at once."""

from __future__ import annotations

import json
from pathlib import Path

from tests.posttrain.stage_types.plans import plan, problems

RM = "sft_rm_grpo"


def test_the_fan_in_dag_plans_with_the_reward_model_and_the_sft_reference():
    p = plan(pipeline=RM)
    grpo, rm, sft = p.stage("grpo"), p.stage("rm"), p.stage("sft")
    assert set(grpo.upstream) == {"sft", "rm"} and rm.upstream == ["sft"]
    names = [s.name for s in p.stages]
    assert names.index("rm") < names.index("grpo") < names.index("eval")
    assert grpo.spec.policy.path == grpo.spec.reference.path == sft.spec.model_dir  # KL against the SFT model
    rewards = {r["name"]: r for r in grpo.spec.settings["rewards"]}
    assert rewards["rm"]["model"]["path"] == rm.spec.model_dir == str(Path(p.run_dir) / "rm" / "model")
    assert rewards["correct"]["verifier"] == {"_target_": "demo.tasks.check"} and rewards["rm"]["weight"] == 0.5
    assert rm.spec.policy.path == sft.spec.model_dir and rm.spec.trainer["max_length"] == 32
    dpo_grpo = plan(pipeline="sft_dpo_grpo").stage("grpo")
    assert dpo_grpo.upstream == ["dpo"] and dpo_grpo.spec.reference.path == dpo_grpo.spec.policy.path


def test_reward_models_must_be_reward_stages_and_rewards_must_exist(tmp_path):
    causal = tmp_path / "causal"
    causal.mkdir()
    (causal / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    rewards = ("[{verifier: {_target_: demo.tasks.chek}}, {name: rm, model: sft}, {model: checkpoint},"
               f"{{model: {causal}}}, {{name: both, verifier: {{_target_: demo.tasks.check}}, model: rm}},"
               "{name: rm, verifier: {_target_: demo.tasks.check}}]")
    found = problems(f"stages.grpo.grpo.rewards={rewards}", "stages.grpo.trainer.reward_weights=[1.0]",
                     "stages.grpo.trainer.use_vllm=true", "stages.grpo.trainer.num_generatons=4",
                     "stages.grpo.policy=rm", "stages.eval.models=[sft,rm]", pipeline=RM)
    assert any(f.startswith("stages.grpo.grpo.rewards[0].verifier._target_: module 'demo.tasks'") and "no 'chek'" in f
               for f in found)
    assert ("stages.grpo.grpo.rewards[1].model: 'sft' is a sft stage; it saves model, not a reward model "
            "(stages that do: reward)") in found
    assert any(f.startswith("stages.grpo.grpo.rewards[2].model: 'checkpoint' is a checkpoint stage") for f in found)
    assert f"stages.grpo.grpo.rewards[3].model: {causal} is a LlamaForCausalLM, not a reward model" in " ".join(found)
    assert any(f.startswith("stages.grpo.grpo.rewards[4]: give either `verifier`") and "not both" in f for f in found)
    assert "stages.grpo.grpo.rewards[5].name: 'rm' is used twice; give each reward its own `name`" in found
    assert any(f.startswith("stages.grpo.trainer.reward_weights: set each reward's weight") for f in found)
    assert any(f.startswith("stages.grpo.trainer.use_vllm: vllm is not installed here") for f in found)
    assert any(f.startswith("stages.grpo.trainer.num_generatons: not a field of TRL's GRPOConfig; did you mean "
                            "'num_generations'") for f in found)
    assert "stages.grpo.policy: 'rm' is a reward stage; it saves reward_model, not a model" in found
    assert "stages.eval.models[1]: 'rm' is a reward stage; it saves reward_model, not a model" in found


def test_prompts_without_answers_are_refused_when_a_verifier_needs_them(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "add: 1+2", "answer": "3"}, {"prompt": "copy: abcd"},
            {"prompt": "reverse: abcd", "answer": 7, "task": "reverse"}, {"prompt": "upper: abcd"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = f"stages.grpo.data={{format: prompt, sources: [{{path: {prompts}}}]}}"
    found = problems(data, pipeline="sft_dpo_grpo")
    assert [f for f in found if "answer" in f] == [
        "stages.grpo.data.sources[0]: prompts.jsonl rows 2, 4: no 'answer', but reward correct compare with one; add "
        "answers, or set needs_answer: false on a verifier that solves prompts itself"]
    solver = "stages.grpo.grpo.rewards=[{verifier: {_target_: demo.tasks.check_or_solve}, needs_answer: false}]"
    spec = plan(data, solver, pipeline="sft_dpo_grpo").stage("grpo").spec
    assert spec.data.format == "prompt" and spec.settings["rewards"][0]["name"] == "check_or_solve"


def test_rl_settings_and_references_are_checked(tmp_path):
    found = problems("stages.grpo.grpo.rewards=[]", "stages.grpo.reference=checkpoint", "stages.grpo.trainer.beta=0.0",
                     "+stage@stages.rloo=rloo", "+data@stages.rloo.data=prompts_rl", "stages.rloo.reference=checkpoint",
                     "+peft@stages.rloo.peft=lora", pipeline="sft_dpo_grpo")
    assert any(f.startswith("stages.grpo.grpo.rewards: give at least one reward") for f in found)
    assert any(f.startswith("stages.grpo.reference: with trainer.beta=0 there is no KL term") for f in found)
    assert any(f.startswith("stages.rloo.reference: with LoRA the reference is the policy with its adapter disabled")
               for f in found)
    rloo = plan("+stage@stages.rloo=rloo", "+data@stages.rloo.data=prompts_rl", "stages.rloo.reference=checkpoint",
                pipeline="sft_dpo_grpo").stage("rloo")
    assert rloo.spec.reference.path == str(Path(rloo.spec.stage_dir).parent / "checkpoint" / "model")
    assert "checkpoint" in rloo.upstream and rloo.spec.trainer["beta"] == 0.05


def test_on_slurm_the_rl_stage_is_one_job_that_waits_for_both_upstream_jobs():
    from workflows.launchers import launcher_for

    p = plan("launcher=slurm", "launcher.gpus_per_node=8", "+deepspeed@stages.grpo.deepspeed=zero3", pipeline=RM)
    scripts = {block.split("\n", 1)[0]: block for block in launcher_for("slurm").dry_run(p).split("==> ")[1:]}
    grpo = scripts[str(Path(p.run_dir) / "grpo" / "job.sbatch")]
    assert "--dependency=afterok:<job of sft>:<job of rm> --kill-on-invalid-dep=yes" in grpo
    assert "#SBATCH --gpus-per-node=8" in grpo and "-m stages.grpo" in grpo and "grpo/stage.yaml" in grpo

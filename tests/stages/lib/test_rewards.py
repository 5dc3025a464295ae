"""Verifiers as TRL reward functions (stages/lib/rewards.py): one reward per completion, a verifier
that raises on garbage output gives 0, and the prompts keep their reference answers."""

from __future__ import annotations

import math

from posttrain.spec import StageSpec
from stages.lib.rewards import answer_problem, prompt_rows, verifier_reward


def fussy(task, prompt, answer, output):
    """A verifier that chokes on what it cannot parse, as user code does."""
    return int(output) == int(answer)


def graded(task, prompt, answer, output, scale=1.0):
    return {"half": 0.5 * scale, "nan": math.nan, "inf": math.inf}.get(output, output == answer)


def user(text):
    return [{"role": "user", "content": text}]


def said(text):
    return [{"role": "assistant", "content": text}]


def test_a_raising_verifier_gives_zero_and_the_others_are_scored():
    reward = verifier_reward("sum", {"_target_": f"{__name__}.fussy"})
    assert reward.__name__ == "sum"  # TRL's curve: rewards/sum/mean
    prompts = [user("add: 1+2")] * 4
    completions = [said("3"), said("<|end|>}{garbage"), said(""), said("4")]
    assert reward(prompts=prompts, completions=completions, answer=["3", "3", "3", None],
                  completion_ids=[[1]] * 4, trainer_state=None) == [1.0, 0.0, 0.0, 0.0]


def test_scores_pass_through_with_kwargs_and_non_finite_scores_are_zero():
    reward = verifier_reward("graded", {"_target_": f"{__name__}.graded", "scale": 2.0})
    out = reward(prompts=["p"] * 4, completions=["half", "nan", "inf", "x"], answer=["x"] * 4, task=["t"] * 4)
    assert out == [1.0, 0.0, 0.0, 1.0]


def test_demo_verifier_on_plain_and_chat_prompts():
    reward = verifier_reward("correct", {"_target_": "demo.tasks.check_or_solve"})
    assert reward(prompts=[user("reverse: abcd"), "reverse: abcd", user("reverse: abcd")],
                  completions=[said("dcba"), " dcba ", said("abcd")], answer=[None, "dcba", "dcba"]) == [1.0, 1.0, 0.0]


def test_prompt_rows_keep_the_reference_answer_of_every_prompt_format():
    rows = [{"messages": user("copy: abcd") + said("abcd")},
            {"prompt": user("upper: ab"), "chosen": said("AB"), "rejected": said("Ab")},
            {"prompt": "len: abc", "completion": "3"},
            {"prompt": user("add: 1+1"), "answer": "2", "task": "add"},
            {"prompt": "max: 1 2", "answer": None, "task": None}]
    assert prompt_rows(rows) == [
        {"prompt": user("copy: abcd"), "answer": "abcd", "task": None},
        {"prompt": user("upper: ab"), "answer": "AB", "task": None},
        {"prompt": "len: abc", "answer": "3", "task": None},  # a plain prompt stays plain (no chat template)
        {"prompt": user("add: 1+1"), "answer": "2", "task": "add"},
        {"prompt": "max: 1 2", "answer": None, "task": None}]
    spec = StageSpec(name="grpo", type="grpo", stage_dir="x", model_dir="x/model", seed=0, settings={"rewards": [
        {"name": "correct", "verifier": {"_target_": "demo.tasks.check"}, "weight": 1.0}]})
    assert answer_problem(spec, prompt_rows(rows)).startswith("[grpo] 1 of 5 prompts have no reference answer")
    spec.settings["rewards"][0]["needs_answer"] = False
    assert answer_problem(spec, prompt_rows(rows)) is None

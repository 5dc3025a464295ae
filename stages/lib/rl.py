"""The shared body of the GRPO and RLOO stages: online RL from a policy, scored by verifiers and reward models.

The policy samples completions for the prompts of `data` (transformers' generate on CPU, vLLM when
`trainer.use_vllm`), the rewards (stages/lib/rewards.py) score them, and the trainer keeps the
policy near its frozen reference (beta > 0): by default the policy's starting model (TRL loads it
from the policy's own directory), with LoRA the policy with its adapter disabled, else `reference`.
A sample of the scored completions goes to <stage>/completions.jsonl and the tracker's table.
"""

from __future__ import annotations

import json
import math
from typing import Any

from posttrain.artifacts import COMPLETIONS_FILE, StageDir
from posttrain.spec import StageSpec
from posttrain.tracking import backend
from posttrain.verifiers import prompt_text, response_text
from stages.lib.common import is_main_process, log
from stages.lib.data import load_stage_data, materialize
from stages.lib.models import load_model, load_tokenizer, lora_config, model_digest
from stages.lib.rewards import answer_problem, load_rewards, prompt_rows
from stages.lib.training import train_and_finish


def reference_note(spec: StageSpec, beta: float) -> str:
    assert spec.reference is not None and spec.policy is not None
    if not beta:
        return "none (beta=0: no KL term)"
    if spec.peft:
        return f"{spec.reference.path} (policy with the LoRA adapter disabled)"
    if spec.reference.path == spec.policy.path:
        return f"{spec.reference.path} (loaded by TRL from the policy's starting dir)"
    return spec.reference.path


def completion_log(trainer: Any, spec: StageSpec, weights: list[float]) -> Any:
    """A callback that appends `log_completions` scored completions per logging step to
    <stage>/completions.jsonl (rank 0), and hands the whole file to the tracker as a table at the end."""
    from transformers import TrainerCallback

    path = StageDir(spec.stage_dir) / COMPLETIONS_FILE
    keep = int(spec.settings.get("log_completions") or 0)
    names = [e["name"] for e in spec.settings["rewards"]]

    class CompletionLog(TrainerCallback):
        logged_step = -1  # the final summary log repeats the last step

        def on_train_begin(self, args, state, control, **kwargs):
            if not is_main_process() or not keep:
                return
            old = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
            path.write_text("".join(json.dumps(r) + "\n" for r in old if r["step"] <= state.global_step))  # resumed
            self.logged_step = state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs_ = getattr(trainer, "_logs", None)  # GRPO/RLOO keep the latest generation batch here, gathered
            if not is_main_process() or not keep or not logs_ or not logs_["prompt"] or \
                    state.global_step == self.logged_step:
                return
            self.logged_step = state.global_step
            rows = []
            for i in range(min(keep, len(logs_["prompt"]))):
                rewards = {n: _finite(logs_["rewards"][n][i]) for n in names if len(logs_["rewards"][n]) > i}
                total = sum(w * r for w, r in zip(weights, rewards.values()) if r is not None)
                rows.append({"step": state.global_step, "prompt": logs_["prompt"][i],  # as TRL had it
                             "completion": response_text(logs_["completion"][i]), "rewards": rewards,
                             "reward": total, "advantage": _finite(logs_["advantages"][i])})
            with open(path, "a") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

        def on_train_end(self, args, state, control, **kwargs):
            if not is_main_process() or not keep or not path.is_file():
                return
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            if rows:
                columns = {"step": [r["step"] for r in rows], "prompt": [prompt_text(r["prompt"]) for r in rows],
                           "completion": [r["completion"] for r in rows], "reward": [r["reward"] for r in rows],
                           **{f"reward/{n}": [r["rewards"].get(n) for r in rows] for n in names},
                           "advantage": [r["advantage"] for r in rows]}
                backend(spec.tracking.backend).log_table(spec, f"{spec.type}/completions.json", columns)

    return CompletionLog()


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def run(spec: StageSpec, trainer_cls: type, args: Any) -> None:
    """Load policy, rewards and prompts; train; save; write the manifest."""
    assert spec.policy is not None and spec.reference is not None
    data = load_stage_data(spec)
    train = prompt_rows(data.train)
    if problem := answer_problem(spec, train):
        raise SystemExit(problem)
    evaluation = prompt_rows(data.evaluation) if data.evaluation is not None else None
    tokenizer = load_tokenizer(spec.policy, spec)
    model = load_model(spec.policy, spec)
    initial_digest = model_digest(model)
    funcs, reward_tokenizers, weights = load_rewards(spec)
    args.reward_weights = weights
    note = reference_note(spec, args.beta)
    log(spec, f"{len(train)} prompts x {args.num_generations} completions; policy {spec.policy.path}; "
              f"reference {note}; rewards " + ", ".join(f"{e['name']} x{e['weight']:g}" for e in spec.settings["rewards"]))
    # TRL builds the frozen reference from the policy's `_name_or_path` (its starting dir): point it at
    # `reference` while the trainer is made, so the KL is measured against the model the config names.
    starting = model.config._name_or_path
    if args.beta and not spec.peft:
        model.config._name_or_path = spec.reference.path
    try:
        trainer = trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=materialize(train),
                              eval_dataset=materialize(evaluation) if evaluation else None, processing_class=tokenizer,
                              reward_processing_classes=reward_tokenizers, peft_config=lora_config(spec.peft))
    finally:
        model.config._name_or_path = starting
    trainer.add_callback(completion_log(trainer, spec, weights))
    train_and_finish(trainer, tokenizer, spec, data, initial_digest, reference_note=note,
                     rewards={e["name"]: e["weight"] for e in spec.settings["rewards"]})

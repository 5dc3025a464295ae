"""The stage-type registry: plain data, so the planner can refuse a bad pipeline before launching anything.

A stage type is its script (`stages/<type>.py`), its config (`conf/stage/<type>.yaml`) and one
entry here. An entry says everything the planner needs; the planner has no per-type branches.
A type with its own settings block (`stages.<name>.<type>.*`) also has a module in
posttrain/stage_types/ with the block's schema and its plan-time checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from posttrain.data.formats import FORMATS
from posttrain.refs import CHECKPOINT
from posttrain.stage_types import eval as eval_type
from posttrain.stage_types import generate as generate_type
from posttrain.stage_types import onpolicy as onpolicy_type
from posttrain.stage_types import rl as rl_type

PlanHook = Callable[[Any, str, dict[str, Any]], dict[str, Any]]  # (PlanContext, name, stage config) -> spec fields


@dataclass(frozen=True)
class StageType:
    module: str  # run as `python -m <module> <stage.yaml>`
    shapes: tuple[str, ...]  # trainer-side data shapes its `data` may become; () = takes no data
    trl_config: str | None  # the TRL config class its `trainer` keys belong to
    trains: bool  # produces new weights from `policy`
    uses_reference: bool  # has a frozen reference model (dpo, kto)
    uses_policy: bool = True  # starts from `policy` (eval measures `models`; generate has a teacher)
    # What later stages can use: model (a causal LM in <stage>/model) | reward_model (a sequence classifier in
    # <stage>/model) | dataset | metrics (<stage>/results). A model input names the kind it needs (PlanContext.model).
    output: str = "model"
    settings: type | None = None  # the schema of its own block, `stages.<name>.<type>` (a dataclass)
    plan: PlanHook | None = None  # checks of that block and the spec fields it adds
    takes_models: bool = False  # measures `models` (eval)
    single_process: bool = False  # runs as one process whatever the launcher's GPUs
    # Problems of a gate's metric key on this type's manifest, (where, stage, key, stage config); None = any key.
    metric_problems: Callable[[str, str, str, dict[str, Any]], list[str]] | None = None
    describe: Callable[[Any], list[str]] | None = None  # its own parts of the plan line, from its StageSpec

    @property
    def formats(self) -> tuple[str, ...]:
        """The data formats its `data` may declare: those that convert to one of its shapes."""
        return tuple(name for name, f in FORMATS.items() if f.shape in self.shapes
                     or any(s in self.shapes for s in f.shapes))


SFT_SHAPES = ("messages", "prompt_completion", "text")
# Rows with a user prompt and, optionally, a reference answer (the last assistant turn, `completion`, `chosen`).
PROMPT_SHAPES = ("messages", "prompt_completion", "preference", "prompt")

STAGE_TYPES: dict[str, StageType] = {
    CHECKPOINT: StageType("stages.checkpoint", (), None, trains=False, uses_reference=False),
    "sft": StageType("stages.sft", SFT_SHAPES, "SFTConfig", trains=True, uses_reference=False),
    "dpo": StageType("stages.dpo", ("preference",), "DPOConfig", trains=True, uses_reference=True),
    # Preference pairs are split into a desirable and an undesirable example for KTO.
    "kto": StageType("stages.kto", ("unpaired_preference",), "KTOConfig", trains=True, uses_reference=True),
    # Measures `models` on held-out data: task accuracy, preference accuracy, perplexity.
    "eval": StageType("stages.eval", (), None, trains=False, uses_reference=False, uses_policy=False,
                      output="metrics", settings=eval_type.EvalSettings, plan=eval_type.plan, takes_models=True,
                      single_process=True, metric_problems=eval_type.metric_problems,
                      describe=eval_type.describe),
    # A teacher writes instructions and responses from seed tasks (`data`); a verifier filters them.
    "generate": StageType("stages.generate", PROMPT_SHAPES, None, trains=False, uses_reference=False,
                          uses_policy=False, output="dataset", settings=generate_type.GenerateSettings,
                          plan=generate_type.plan, single_process=True, describe=generate_type.describe),
    # `policy` samples k responses per prompt (`data`); verified samples become preference pairs.
    "onpolicy": StageType("stages.onpolicy", PROMPT_SHAPES, None, trains=False, uses_reference=False,
                          output="dataset", settings=onpolicy_type.OnPolicySettings, plan=onpolicy_type.plan,
                          single_process=True, describe=onpolicy_type.describe),
    # A scalar score per (prompt, response), trained on preference pairs; saved as a sequence classifier.
    "reward": StageType("stages.reward", ("preference",), "RewardConfig", trains=True, uses_reference=False,
                        output=rl_type.REWARD_MODEL),
    # Online RL from `policy` on the prompts of `data`, scored by a weighted list of verifiers and reward models.
    "grpo": StageType("stages.grpo", PROMPT_SHAPES, "GRPOConfig", trains=True, uses_reference=True,
                      settings=rl_type.RLSettings, plan=rl_type.plan, describe=rl_type.describe),
    "rloo": StageType("stages.rloo", PROMPT_SHAPES, "RLOOConfig", trains=True, uses_reference=True,
                      settings=rl_type.RLSettings, plan=rl_type.plan, describe=rl_type.describe),
}

# Trainer keys posttrain sets itself; a user value would silently fight the orchestrator.
MANAGED_TRAINER_KEYS = {
    "output_dir": "each stage writes to <run_dir>/<stage>; set run_dir instead",
    "deepspeed": "choose the `deepspeed` group (pipeline-wide) or stages.<name>.deepspeed",
    "resume_from_checkpoint": "posttrain resumes interrupted stages by itself",
}

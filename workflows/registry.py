"""The stage registry: plain data, so the planner can refuse a bad pipeline before launching anything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class StageType:
    module: str  # run as `python -m <module> <stage.yaml>`
    data_formats: tuple[str, ...]  # formats its `data` may declare; () = takes no data
    trl_config: str | None  # the TRL config class its `trainer` keys belong to
    trains: bool  # produces new weights from `policy`
    uses_reference: bool  # has a frozen reference model (dpo, kto)
    uses_policy: bool = True  # starts from `policy` (eval measures `models`; generate has a teacher)
    output: str = "model"  # what later stages can use: model (<stage>/model) | dataset (<stage>/dataset) | metrics


SFT_FORMATS = ("messages", "prompt_completion", "text", "alpaca", "sharegpt")
# Rows with a user prompt and, optionally, a reference answer (the last assistant turn, `completion`, `chosen`).
PROMPT_FORMATS = ("messages", "prompt_completion", "alpaca", "sharegpt", "preference")

STAGE_TYPES: dict[str, StageType] = {
    "checkpoint": StageType("stages.checkpoint", (), None, trains=False, uses_reference=False),
    "sft": StageType("stages.sft", SFT_FORMATS, "SFTConfig", trains=True, uses_reference=False),
    "dpo": StageType("stages.dpo", ("preference",), "DPOConfig", trains=True, uses_reference=True),
    # Preference pairs are split into a desirable and an undesirable example for KTO.
    "kto": StageType(
        "stages.kto", ("unpaired_preference", "preference"), "KTOConfig", trains=True, uses_reference=True
    ),
    # Measures `models` on held-out data: task accuracy, preference accuracy, perplexity.
    "eval": StageType("stages.eval", (), None, trains=False, uses_reference=False, uses_policy=False,
                      output="metrics"),
    # A teacher writes instructions and responses from seed tasks (`data`); a verifier filters them.
    "generate": StageType("stages.generate", PROMPT_FORMATS, None, trains=False, uses_reference=False,
                          uses_policy=False, output="dataset"),
    # `policy` samples k responses per prompt (`data`); verified samples become preference pairs.
    "onpolicy": StageType("stages.onpolicy", PROMPT_FORMATS, None, trains=False, uses_reference=False,
                          output="dataset"),
}

# Trainer keys posttrain sets itself; a user value would silently fight the orchestrator.
MANAGED_TRAINER_KEYS = {
    "output_dir": "each stage writes to <run_dir>/<stage>; set run_dir instead",
    "deepspeed": "choose the `deepspeed` group (pipeline-wide) or stages.<name>.deepspeed",
    "resume_from_checkpoint": "posttrain resumes interrupted stages by itself",
}

TRL_FIELDS_FILE = Path(__file__).with_name("trl_fields.json")


@cache
def trl_fields() -> dict:
    """TRL's config fields per class, generated from the installed TRL by workflows/gen_trl_fields.py.

    Read from a JSON file so validation needs no `import trl` (about 6 s).
    """
    return json.loads(TRL_FIELDS_FILE.read_text())

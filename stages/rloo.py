"""REINFORCE leave-one-out with TRL's RLOOTrainer: `python -m stages.rloo <stage.yaml>`.

Like GRPO (stages/grpo.py), with each completion's baseline the mean reward of the other
completions of its prompt, and the KL to `reference` in the reward. `trainer` takes any RLOOConfig field.
"""

from __future__ import annotations

from typing import Any

from posttrain.spec import StageSpec
from stages.lib import rl
from stages.lib.common import load_spec, trl_args


def build_config(spec: StageSpec) -> Any:
    from trl import RLOOConfig

    return trl_args(RLOOConfig, spec)


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    from trl import RLOOTrainer

    args = build_config(spec)  # before any model loads: ZeRO-3 must be configured first
    rl.run(spec, RLOOTrainer, args)


if __name__ == "__main__":
    main()

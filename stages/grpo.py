"""Group relative policy optimisation with TRL's GRPOTrainer: `python -m stages.grpo <stage.yaml>`.

RL with verifiable rewards: the policy (an SFT or DPO model) samples `num_generations` completions
per prompt of `data`; `grpo.rewards` (verifiers and reward models, weighted) score them; each
completion's advantage is its reward relative to its group. With beta > 0 a KL term keeps the
policy near `reference` (by default its starting model). `trainer` takes any GRPOConfig field.
"""

from __future__ import annotations

from typing import Any

from posttrain.spec import StageSpec
from stages.lib import rl
from stages.lib.common import load_spec, trl_args


def build_config(spec: StageSpec) -> Any:
    from trl import GRPOConfig

    return trl_args(GRPOConfig, spec)


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    from trl import GRPOTrainer

    args = build_config(spec)  # before any model loads: ZeRO-3 must be configured first
    rl.run(spec, GRPOTrainer, args)


if __name__ == "__main__":
    main()

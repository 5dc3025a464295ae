"""Direct preference optimisation with TRL's DPOTrainer: `python -m stages.dpo <stage.yaml>`.

The policy starts from `policy` (the SFT output by default) and is kept close to the frozen
`reference` (by default the same model). `trainer` takes any DPOConfig field: beta, loss_type,
precompute_ref_log_probs, ...
"""

from __future__ import annotations

from typing import Any

from posttrain.spec import StageSpec
from stages.lib import preference
from stages.lib.common import load_spec, trl_args


def build_config(spec: StageSpec) -> Any:
    from trl import DPOConfig

    return trl_args(DPOConfig, spec)


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    from trl import DPOTrainer

    args = build_config(spec)  # before any model loads: ZeRO-3 must be configured first
    preference.run(spec, DPOTrainer, args)


if __name__ == "__main__":
    main()

"""Kahneman-Tversky optimisation with TRL's KTOTrainer: `python -m stages.kto <stage.yaml>`.

Learns from unpaired thumbs-up/down examples (prompt, completion, label); preference pairs are
split into one desirable and one undesirable example. `trainer` takes any KTOConfig field.
"""

from __future__ import annotations

from typing import Any

from posttrain.spec import StageSpec
from stages.lib import preference
from stages.lib.common import load_spec, trl_args


def build_config(spec: StageSpec) -> Any:
    from trl import KTOConfig

    return trl_args(KTOConfig, spec)


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    from trl import KTOTrainer

    args = build_config(spec)  # before any model loads: ZeRO-3 must be configured first
    preference.run(spec, KTOTrainer, args)


if __name__ == "__main__":
    main()

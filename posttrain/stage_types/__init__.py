"""The plan side of stage types that carry their own settings block (`stages.<name>.<type>`).

Each module defines its settings schema (a dataclass, also Hydra's schema for the block) and
`plan(ctx, name, stage)`: checks of the block and what it adds to the stage's spec. The planner
calls it through the registry (posttrain/registry.py) with a `PlanContext`; nothing here imports
the orchestrator.
"""

from __future__ import annotations

from typing import Any, Protocol

from posttrain.spec import ModelRef


class PlanContext(Protocol):
    """What a stage type's plan hook may ask of the planner."""

    run_dir: str
    config: dict[str, Any]  # the resolved pipeline config

    def problem(self, message: str) -> None:
        """Report a problem (the plan fails with every problem at once)."""

    def model(self, stage: str, key: str, ref: str, output: str = "model") -> ModelRef | None:
        """Resolve a model reference of `stage` at `key`; records the DAG edge, or a problem (None).
        `output`: the registry output kind it must be when it names a stage (model, reward_model)."""

    def tokenizer(self) -> str | None:
        """The starting checkpoint's tokenizer folder (or hub id), to measure token lengths with."""

    def note(self, stage: str, message: str) -> None:
        """A line the plan prints under the stage (what was chosen for it)."""


def positive(where: str, settings: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Problems of the `keys` of `settings` that are set but not positive."""
    return [f"{where}.{k}: must be a positive number, got {settings[k]}" for k in keys
            if isinstance(settings.get(k), (int, float)) and not settings[k] > 0]  # NaN is refused too;
    # strings ("auto") are their callers' to check

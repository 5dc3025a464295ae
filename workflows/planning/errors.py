"""The one error planning raises: every problem found, each naming its stage or key."""

from __future__ import annotations

from posttrain.names import printable, quoted


class PlanError(Exception):
    """The pipeline cannot run; `problems` lists every reason."""

    def __init__(self, pipeline: str, problems: list[str]):
        self.problems = problems
        n = len(problems)
        lines = "\n".join(f"  - {printable(p)}" for p in problems)  # a value's line break cannot forge a line
        super().__init__(f"Pipeline {quoted(pipeline)} is not well-formed, found {n} problem{'s' * (n != 1)}:\n{lines}")

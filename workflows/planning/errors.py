"""The one error planning raises: every problem found, each naming its stage or key."""

from __future__ import annotations


class PlanError(Exception):
    """The pipeline cannot run; `problems` lists every reason."""

    def __init__(self, pipeline: str, problems: list[str]):
        self.problems = problems
        n = len(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Pipeline '{pipeline}' is not well-formed, found {n} problem{'s' * (n != 1)}:\n{lines}")

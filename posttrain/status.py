"""What became of a stage in one invocation."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """A stage's outcome; the value is what summary.json and MLflow tags hold."""

    COMPLETED = "completed"  # ran and wrote its manifest
    CACHED = "cached"  # its manifest carries the current fingerprint: nothing ran
    GIVEN = "given"  # a model given by path or hub id: nothing to run
    SUBMITTED = "submitted"  # handed to a scheduler, which runs it later
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped on a signal after saving a checkpoint: the next run resumes it
    SKIPPED = "skipped"  # an upstream stage did not deliver
    CANCELLED = "cancelled"  # the scheduler cancelled its job
    GATED = "gated"  # its gate refused an upstream metric

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__
    __hash__ = str.__hash__  # `Status.CACHED in {'cached'}` on every Python version


DONE = frozenset({Status.COMPLETED, Status.CACHED, Status.GIVEN})  # its outputs are there for the next stage
OK = DONE | {Status.SUBMITTED}  # the invocation did what it was asked

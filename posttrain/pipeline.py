"""The typed record of one invocation: its planned stages in DAG order, and what became of each.

The planner (workflows/planning/) builds a `Plan`; launchers turn each `PlannedStage` into a
`StageResult`; summary.json holds the results; trackers and reports read both. plan.json holds a
`PlanRecord`: the plan as `posttrain status` and `posttrain report` read it back from a run_dir.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from posttrain.artifacts import StageDir
from posttrain.spec import StageSpec, TrackingSpec
from posttrain.status import Status


@dataclass
class PlannedStage:
    name: str
    type: str
    upstream: list[str]  # stage names this one waits for, in DAG order
    spec: StageSpec  # everything the stage process needs; written to <stage_dir>/stage.yaml
    command: list[str]  # the argv that starts it on one node (runners.stage_command)
    external: bool = False  # a model given by path/hub id: nothing to run
    reason: str = "new"  # why it runs (or `cached`), shown in the plan
    notes: list[str] = field(default_factory=list)  # data-check findings (drops, truncation), shown in the plan

    @property
    def stage_dir(self) -> str:
        return self.spec.stage_dir

    @property
    def dir(self) -> StageDir:
        return StageDir(self.spec.stage_dir)

    @property
    def cached(self) -> bool:
        return self.reason == Status.CACHED.value


@dataclass
class Plan:
    name: str
    run_dir: str
    stages: list[PlannedStage]  # topological order
    config: dict[str, Any] = field(repr=False)  # the fully resolved pipeline config
    tracking: TrackingSpec = field(default_factory=TrackingSpec)  # resolved once, for the whole invocation

    def stage(self, name: str) -> PlannedStage:
        return next(s for s in self.stages if s.name == name)

    def downstream(self, name: str) -> set[str]:
        """Every stage that (transitively) depends on `name`."""
        out: set[str] = set()
        for s in self.stages:  # topological order: upstreams are visited first
            if name in s.upstream or out.intersection(s.upstream):
                out.add(s.name)
        return out


@dataclass
class StageResult:
    name: str
    type: str
    status: Status
    output_dir: str
    inputs: dict[str, Any]
    wall_seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why it was skipped or failed
    extra: dict[str, Any] = field(default_factory=dict)  # launcher details (job id, log path)

    @classmethod
    def of(cls, stage: PlannedStage, status: Status, reason: str = "", **kwargs: Any) -> StageResult:
        return cls(stage.name, stage.type, status, stage.spec.model_dir, stage.spec.inputs(), reason=reason, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


@dataclass
class StageRecord:
    """One planned stage as plan.json keeps it."""

    name: str
    type: str
    upstream: list[str]
    reason: str
    stage_dir: str
    output_dir: str
    fingerprint: str | None = None
    external: bool = False


@dataclass
class PlanRecord:
    """plan.json: what one invocation set out to do, and who does it (written before any stage starts)."""

    name: str
    run_dir: str
    stages: list[StageRecord]
    launcher: str
    tracking: str  # the tracking backend's name
    started_at: float
    pid: int  # the orchestrator's
    host: str
    command: str = ""
    plan_text: str = ""  # as printed before the run

    @classmethod
    def of(cls, plan: Plan, command: str, plan_text: str) -> PlanRecord:
        stages = [StageRecord(s.name, s.type, list(s.upstream), s.reason, s.stage_dir, s.spec.model_dir,
                              s.spec.fingerprint, s.external) for s in plan.stages]
        return cls(plan.name, plan.run_dir, stages, str(plan.config["launcher"].get("name")), plan.tracking.backend,
                   time.time(), os.getpid(), socket.gethostname(), command, plan_text)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanRecord:
        """Raises: KeyError or TypeError for a record that is not a plan.json."""
        known = StageRecord.__dataclass_fields__
        stages = [StageRecord(**{k: v for k, v in s.items() if k in known}) for s in data["stages"]]
        return cls(**{**{k: v for k, v in data.items() if k in cls.__dataclass_fields__}, "stages": stages})

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages if s.name == name)

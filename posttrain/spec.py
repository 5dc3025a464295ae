"""The stage contract: what the orchestrator hands a stage process, as typed dataclasses.

The planner builds a `StageSpec` per stage and writes it to `<stage_dir>/stage.yaml`
(`StageSpec.dump`); the stage process reads it back into the same type (`StageSpec.load`), which
refuses unknown keys and values of the wrong type, naming the key. Fields a stage type adds for
itself (an eval's `eval` block, a teacher) travel in `settings`, shaped by that type's settings
schema (posttrain/registry.py).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml


class SpecError(ValueError):
    """stage.yaml does not match the contract; the message names the key."""


@dataclass
class ModelRef:
    """A model a stage loads: `ref` as the config wrote it, `path` what `from_pretrained` reads."""

    ref: str  # a stage name, `checkpoint`, a local dir or a hub id
    path: str  # the model dir or hub id to load
    stage: str | None = None  # the pipeline stage that makes it; None = given by path or hub id
    tokenizer: str | None = None  # tokenizer dir or hub id; None = `path`
    revision: str | None = None  # hub revision of `path`
    label: str | None = None  # eval: the name its metrics go under
    reference: ModelRef | None = None  # eval: the reference model it was trained against

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.path


@dataclass
class Source:
    """One data source: a local file/folder, a hub dataset id, or an upstream stage's dataset."""

    path: str | None = None
    name: str | None = None  # hub dataset config name
    split: str = "train"
    revision: str | None = None
    stage: str | None = None  # the upstream stage that writes it
    weight: float | None = None  # share of the training rows in a mixture
    max_rows: int | None = None  # cap: a seeded sample of this many rows
    format: str | None = None  # this source's format when it differs from the data's


@dataclass
class DataSpec:
    format: str
    sources: list[Source] = field(default_factory=list)
    eval_sources: list[Source] = field(default_factory=list)
    eval_fraction: float = 0.0
    shuffle: bool = True
    seed: int = 0
    on_invalid: str = "error"  # error | drop


@dataclass
class Resources:
    """How the stage's processes start (resolved: no `auto`, no nulls but `time`)."""

    runner: str = "python"  # python | torchrun | deepspeed | srun
    nodes: int = 1
    processes_per_node: int = 1
    gpus_per_node: int = 0
    time: str | None = None

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node


@dataclass
class TrackingSpec:
    backend: str = "none"  # a key of posttrain.tracking.TRACKERS
    uri: str | None = None
    experiment: str | None = None
    register: str | None = None  # a stage name whose model is registered
    registered_model: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # on every run of the invocation (a sweep's id)


@dataclass
class GateSpec:
    """Run only when `<stage>/<key>` of an upstream manifest is within [min, max]."""

    metric: str  # as the config wrote it: <stage>/<key>
    stage: str
    key: str
    manifest: str  # the upstream manifest the value is read from
    min: float | None = None
    max: float | None = None


@dataclass
class StageSpec:
    name: str
    type: str  # a key of posttrain.registry.STAGE_TYPES
    stage_dir: str
    model_dir: str  # where its output goes (a model, a dataset or results)
    seed: int
    resources: Resources = field(default_factory=Resources)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    policy: ModelRef | None = None  # the model it starts from
    reference: ModelRef | None = None  # dpo/kto: the frozen reference
    data: DataSpec | None = None
    trainer: dict[str, Any] = field(default_factory=dict)  # TRL config fields, TRL's names
    peft: dict[str, Any] | None = None  # LoRA settings (peft's names); None = full fine-tune
    deepspeed: dict[str, Any] | None = None  # DeepSpeed's JSON config
    chat_template: str | None = None  # a .jinja file replacing the tokenizer's template
    gate: GateSpec | None = None
    models: list[ModelRef] = field(default_factory=list)  # eval: the models measured
    settings: dict[str, Any] = field(default_factory=dict)  # the type's own block (eval, generate, ...)
    model: dict[str, Any] | None = None  # checkpoint: the `model` group
    fingerprint: str | None = None
    fingerprint_inputs: dict[str, Any] | None = None  # what the fingerprint was computed from
    resume_from: str | None = None  # the checkpoint folder this run resumes

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> StageSpec:
        """Raises: SpecError naming the first key that does not fit."""
        return _build(cls, data, "stage")

    def dump(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> StageSpec:
        """Raises: SpecError (also for a file that is not YAML); OSError when it cannot be read."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            raise SpecError(f"{path}: not valid YAML ({err})") from None
        try:
            return cls.from_dict(data)
        except SpecError as err:
            raise SpecError(f"{path}: {err}") from None

    @property
    def tokenizer(self) -> str | None:
        """The tokenizer the stage loads: its policy's."""
        return self.policy.tokenizer_path if self.policy else None

    def inputs(self) -> dict[str, Any]:
        """What the stage reads, by path: in summary.json, its manifest and its tracking run."""
        out: dict[str, Any] = {}
        if self.policy:
            out["policy_init"] = self.policy.path
        if self.reference:
            out["reference_model"] = self.reference.path
        if self.data:
            out["datasets"] = [s.path for s in self.data.sources]
            out["eval_datasets"] = [s.path for s in self.data.eval_sources]
        if self.model is not None:
            out["model"] = self.model.get("name_or_path") or f"built from config ({self.model.get('architecture')})"
        if self.models:
            out["models"] = {m.label: m.path for m in self.models}
        teacher = self.settings.get("teacher") if isinstance(self.settings.get("teacher"), dict) else None
        if teacher:
            out["teacher"] = (f"{teacher['endpoint']} ({teacher['model']})" if teacher.get("endpoint")
                              else teacher.get("path"))
        return out


def _plain(value: Any) -> Any:
    """Enums as their values, tuples as lists: what yaml.safe_dump and json accept."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _build(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed YAML) as type `tp`, checked; SpecError names `where` on a mismatch."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _build(option, value, where)
            except SpecError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = _hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: not a field of {tp.__name__} (fields: {', '.join(fields)})")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = _build(hints[name], value[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SpecError(f"{where}.{name}: missing")
        return tp(**kwargs)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{where}: expected a list, got {type(value).__name__}")
        return [_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise SpecError(f"{where}: expected {tp.__name__}, got a boolean")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise SpecError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value

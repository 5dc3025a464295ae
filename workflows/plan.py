"""Turn a composed pipeline config into a validated, ordered plan of stage processes.

Every problem found is collected and reported at once (`PlanError`), before any compute is spent.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from workflows.commands import resolve_resources, stage_command
from workflows.data_check import check_pipeline_data
from workflows.eval_plan import extra_spec, link_specs
from workflows.fingerprint import annotate
from workflows.launch_checks import launch_problems
from workflows.registry import MANAGED_TRAINER_KEYS, STAGE_TYPES, trl_fields

CHECKPOINT = "checkpoint"  # the implicit node holding the pipeline's starting model
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")  # a missing path with these is a file, not a hub id


class PlanError(Exception):
    """The pipeline cannot run; `problems` lists every reason, each naming its stage or key."""

    def __init__(self, pipeline: str, problems: list[str]):
        self.problems = problems
        n = len(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Pipeline '{pipeline}' is not well-formed, found {n} problem{'s' * (n != 1)}:\n{lines}")


@dataclass
class PlannedStage:
    name: str
    type: str
    upstream: list[str]  # stage names this one waits for, in DAG order
    stage_dir: str
    spec: dict[str, Any]  # everything the stage process needs; written to <stage_dir>/stage.yaml
    command: list[str]
    external: bool = False  # a model given by path/hub id: nothing to run
    reason: str = "new"  # why it runs (or `cached`), shown in the plan
    notes: list[str] = field(default_factory=list)  # data-check findings (drops, truncation), shown in the plan

    @property
    def config_path(self) -> str:
        return os.path.join(self.stage_dir, "stage.yaml")


@dataclass
class Plan:
    name: str
    run_dir: str
    stages: list[PlannedStage]  # topological order
    config: dict[str, Any] = field(repr=False)  # the fully resolved pipeline config

    def stage(self, name: str) -> PlannedStage:
        return next(s for s in self.stages if s.name == name)

    def downstream(self, name: str) -> set[str]:
        """Every stage that (transitively) depends on `name`."""
        out: set[str] = set()
        for s in self.stages:  # topological order: upstreams are visited first
            if name in s.upstream or out.intersection(s.upstream):
                out.add(s.name)
        return out


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_type(value: Any, type_str: str) -> bool:
    """Loose check of a YAML value against a TRL field's annotation string."""
    accepted = {t.strip() for t in re.split(r"[|]", type_str)}
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "None": lambda v: v is None,
    }
    for t in accepted:
        base = t.split("[")[0]
        if base in ("list",) and isinstance(value, list):
            return True
        if base in ("dict",) and isinstance(value, dict):
            return True
        if base not in checks and base not in ("list", "dict"):
            return True  # enums, Union, accelerate types: leave it to TRL
        if base in checks and checks[base](value):
            return True
    return False


def _trainer_problems(name: str, trl_config: str, trainer: dict[str, Any]) -> list[str]:
    fields = trl_fields()["classes"][trl_config]
    problems = []
    for key, value in trainer.items():
        where = f"stages.{name}.trainer.{key}"
        if key in MANAGED_TRAINER_KEYS:
            problems.append(f"{where}: set by posttrain ({MANAGED_TRAINER_KEYS[key]})")
        elif key not in fields:
            problems.append(f"{where}: not a field of TRL's {trl_config}{_suggest(key, list(fields))}")
        elif not _check_type(value, fields[key]):
            problems.append(f"{where}: expected {fields[key]}, got {value!r} ({type(value).__name__})")
    return problems


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a path `[a, b, a]`, or None. `edges` maps a stage to its upstreams."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for up in edges.get(node, []):
            if state.get(up) == 1:
                # report in execution order: upstream first
                return list(reversed(stack[stack.index(up) :])) + [stack[-1]]
            if up not in state and (found := visit(up)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def _topological(edges: dict[str, list[str]], order_hint: list[str]) -> list[str]:
    """Kahn's order, stable with respect to `order_hint`. Assumes no cycle (checked before)."""
    done: list[str] = []
    pending = list(order_hint)
    while pending:
        ready = [n for n in pending if all(u in done or u not in edges for u in edges[n])]
        if not ready:
            raise AssertionError(f"no stage is ready among {pending}")  # a cycle slipped through
        done.extend(ready)
        pending = [n for n in pending if n not in ready]
    return done


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


class _Planner:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.run_dir = _absolute(cfg["run_dir"])
        self.stages: dict[str, dict[str, Any]] = {
            n: s for n, s in (cfg.get("stages") or {}).items() if s.get("enabled", True)
        }
        self.problems: list[str] = []
        self.edges: dict[str, list[str]] = {}
        self.tracking = self.resolve_tracking(cfg["tracking"])

    def resolve_tracking(self, tracking: dict[str, Any]) -> dict[str, Any]:
        """Absolute store path (stage processes may run elsewhere) and the experiment's name."""
        tracking = dict(tracking)
        if tracking.get("backend", "none") == "none":
            return {"backend": "none"}
        uri = tracking["uri"]
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            tracking["uri"] = "sqlite:///" + _absolute(uri[len("sqlite:///"):])
        tracking["experiment"] = tracking.get("experiment") or self.cfg["name"]
        if tracking.get("backend") != "mlflow":
            self.problems.append(f"tracking.backend: '{tracking.get('backend')}' is not one of mlflow, none")
        register, names = tracking.get("register"), [*self.stages, CHECKPOINT]
        if register and register not in names:
            self.problems.append(f"tracking.register: '{register}' is not a stage of this pipeline "
                                 f"(stages: {', '.join(names)}){_suggest(register, names)}")
        return tracking

    def model_dir(self, stage: str) -> str:
        return os.path.join(self.run_dir, stage, "model")

    def checkpoint_external(self) -> bool:
        return bool(self.cfg["model"].get("name_or_path"))

    def resolve_model_ref(self, name: str, key: str, ref: str) -> dict[str, Any] | None:
        """A `policy`/`reference` value -> {'ref', 'path', 'stage'}; records edges and problems."""
        if ref in self.stages or ref == CHECKPOINT:
            if ref == name:
                self.problems.append(f"stages.{name}.{key}: a stage cannot start from itself")
                return None
            self.edges[name].append(ref)
            if ref == CHECKPOINT and self.checkpoint_external():
                return {"ref": ref, "path": self.cfg["model"]["name_or_path"], "stage": ref}
            return {"ref": ref, "path": self.model_dir(ref), "stage": ref}
        if ref.startswith("hf:"):
            return {"ref": ref, "path": ref[3:], "stage": None}
        if ref.startswith(("/", ".", "~")) or HUB_ID.match(ref):
            local = Path(ref).expanduser()
            if local.exists():
                return {"ref": ref, "path": _absolute(ref), "stage": None}
            if ref.startswith(("/", ".", "~")):
                self.problems.append(f"stages.{name}.{key}: no such model directory '{ref}'")
                return None
            return {"ref": ref, "path": ref, "stage": None}  # a hub id, loaded by the stage
        options = sorted([*self.stages, CHECKPOINT])
        self.problems.append(
            f"stage '{name}' needs '{ref}' ({key}), which the pipeline does not define "
            f"(stages: {', '.join(options)}){_suggest(ref, options)}"
        )
        return None

    def resolve_data(self, name: str, data: dict[str, Any] | None, stype) -> dict[str, Any] | None:
        if not stype.data_formats:
            return None
        if data is None:
            self.problems.append(f"stages.{name}.data: a {self.stages[name]['type']} stage needs data")
            return None
        fmt = data["format"]
        if fmt not in stype.data_formats:
            self.problems.append(
                f"stages.{name}.data.format: a {self.stages[name]['type']} stage takes "
                f"{' or '.join(stype.data_formats)} data, not '{fmt}'"
            )
        resolved = dict(data)
        if resolved.get("seed") is None:
            resolved["seed"] = self.cfg["seed"]
        for group in ("sources", "eval_sources"):
            out = []
            for i, src in enumerate(data.get(group) or []):
                where = f"stages.{name}.data.{group}[{i}]"
                src = dict(src)
                if src.get("stage"):
                    up = src["stage"]
                    if up not in self.stages:
                        self.problems.append(f"{where}.stage: '{up}' is not a stage of this pipeline")
                    else:
                        self.edges[name].append(up)
                        src["path"] = os.path.join(self.run_dir, up, "dataset")
                elif not src.get("path"):
                    self.problems.append(f"{where}: give a `path` (file, folder or hub dataset id) or a `stage`")
                elif Path(src["path"]).expanduser().exists():
                    src["path"] = _absolute(src["path"])
                elif not HUB_ID.match(src["path"]) or Path(src["path"]).suffix in DATA_SUFFIXES:
                    self.problems.append(f"{where}.path: no such file or folder '{src['path']}'")
                out.append(src)
            resolved[group] = out
        if not resolved.get("sources"):
            self.problems.append(f"stages.{name}.data.sources: no data source given")
        return resolved

    def stage_spec(self, name: str, stage: dict[str, Any]) -> dict[str, Any]:
        stype = STAGE_TYPES[stage["type"]]
        spec: dict[str, Any] = {
            "name": name,
            "type": stage["type"],
            "stage_dir": os.path.join(self.run_dir, name),
            "model_dir": self.model_dir(name),
            "seed": self.cfg["seed"],
            "trainer": dict(stage.get("trainer") or {}),
            "chat_template": self.cfg["model"].get("chat_template"),
            "tracking": self.tracking,
            "resources": resolve_resources(stage["resources"], self.cfg["launcher"]),
        }
        policy = self.resolve_model_ref(name, "policy", stage["policy"]) if stype.uses_policy else None
        spec["policy"] = policy
        spec["tokenizer"] = policy["path"] if policy else None
        if policy and policy["ref"] == CHECKPOINT and self.checkpoint_external():
            spec["tokenizer"] = self.cfg["model"].get("tokenizer") or policy["path"]
        spec["revision"] = self.cfg["model"].get("revision") if policy and policy["ref"] == CHECKPOINT else None
        if stype.uses_reference:
            ref = stage.get("reference")
            spec["reference"] = policy if ref is None else self.resolve_model_ref(name, "reference", ref)
        elif stage.get("reference") is not None:
            self.problems.append(f"stages.{name}.reference: a {stage['type']} stage has no reference model")
        spec["data"] = self.resolve_data(name, stage.get("data"), stype)
        peft = stage.get("peft") or self.cfg["peft"]
        spec["peft"] = peft if peft.get("method", "none") != "none" else None
        if spec["peft"] and spec["peft"]["method"] != "lora":
            self.problems.append(f"stages.{name}.peft.method: '{peft['method']}' is not one of none, lora")
        deepspeed = stage.get("deepspeed")
        spec["deepspeed"] = (deepspeed if deepspeed is not None else self.cfg["deepspeed"]) or None
        if stype.trl_config:
            self.problems.extend(_trainer_problems(name, stype.trl_config, spec["trainer"]))
        spec.update(extra_spec(self, name, stage))  # gate; eval/generate/onpolicy settings (workflows/eval_plan.py)
        return spec

    def checkpoint_spec(self) -> dict[str, Any]:
        model = self.cfg["model"]
        return {
            "name": CHECKPOINT,
            "type": CHECKPOINT,
            "stage_dir": os.path.join(self.run_dir, CHECKPOINT),
            "model_dir": model["name_or_path"] or self.model_dir(CHECKPOINT),
            "seed": self.cfg["seed"],
            "model": dict(model),
            "tracking": self.tracking,
            "resources": {"runner": "python", "nodes": 1, "processes_per_node": 1, "gpus_per_node": 0,
                          "time": self.cfg["launcher"].get("time")},
        }

    def build(self) -> Plan:
        specs: dict[str, dict[str, Any]] = {}
        for name, stage in self.stages.items():
            self.edges[name] = []
            if name == CHECKPOINT:
                self.problems.append(f"stages.{name}: '{CHECKPOINT}' is reserved for the starting model (`model` group)")
            elif stage["type"] not in STAGE_TYPES or stage["type"] == CHECKPOINT:
                types = [t for t in STAGE_TYPES if t != CHECKPOINT]
                self.problems.append(
                    f"stages.{name}.type: unknown stage type '{stage['type']}' "
                    f"(known: {', '.join(types)}){_suggest(stage['type'], types)}"
                )
            else:
                specs[name] = self.stage_spec(name, stage)
        link_specs(self, specs)  # inputs come from stages that make them; evaluated models get their reference
        data_problems, self.data_notes = check_pipeline_data(specs, self.cfg)  # every row of every stage's data
        self.problems.extend(data_problems)
        self.problems.extend(launch_problems(self.cfg, self.stages, specs))  # resources, launcher, DeepSpeed
        if not self.stages:
            self.problems.append("the pipeline defines no stages (did you forget +pipeline=<name>?)")
        if cycle := _find_cycle(self.edges):
            self.problems.append(f"cycle: {' -> '.join(cycle)}")
        if self.problems:
            raise PlanError(self.cfg["name"], self.problems)

        needs_checkpoint = any(CHECKPOINT in ups for ups in self.edges.values())
        order = _topological(self.edges, list(self.stages))
        planned: list[PlannedStage] = []
        if needs_checkpoint:
            spec = self.checkpoint_spec()
            planned.append(self._planned(CHECKPOINT, spec, [], external=self.checkpoint_external()))
        for name in order:
            ups = list(dict.fromkeys(self.edges[name]))
            planned.append(self._planned(name, specs[name], ups))
        return Plan(self.cfg["name"], self.run_dir, planned, self.cfg)

    def _planned(self, name: str, spec: dict[str, Any], ups: list[str], external: bool = False) -> PlannedStage:
        stage_dir = spec["stage_dir"]
        module = STAGE_TYPES[spec["type"]].module
        command = [] if external else stage_command(spec["resources"], module, os.path.join(stage_dir, "stage.yaml"))
        return PlannedStage(name, spec["type"], ups, stage_dir, spec, command, external=external,
                            reason="given" if external else "new", notes=self.data_notes.get(name, []))


def build_plan(cfg: DictConfig | dict[str, Any]) -> Plan:
    """Validate the whole pipeline and order its stages.

    Raises:
        PlanError: with every problem found, each naming the stage or key at fault.
    """
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except Exception as exc:  # an interpolation or a ??? value the user must fill in
            name = cfg.get("name", "?") if not OmegaConf.is_missing(cfg, "name") else "?"
            raise PlanError(str(name), [str(exc).splitlines()[0] + _full_key(exc)]) from None
    return annotate(_Planner(cfg).build())  # fingerprints; why each stage runs or is cached


def _full_key(exc: Exception) -> str:
    key = getattr(exc, "full_key", None)
    return f" (key: {key})" if key else ""

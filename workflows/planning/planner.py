"""Turn a composed pipeline config into a validated, ordered plan of stage processes.

Every problem found is collected and reported at once (`PlanError`), before any compute is spent.
What a stage type needs comes from its registry entry (posttrain/registry.py); nothing here
branches on a type's name.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from posttrain.artifacts import OUTPUT_DIRS, STAGE_YAML
from posttrain.pipeline import Plan, PlannedStage
from posttrain.refs import CHECKPOINT, HUB_ID, HUB_PREFIX, looks_like_path, model_label, names_data_file
from posttrain.registry import STAGE_TYPES, StageType
from posttrain.spec import DataSpec, ModelRef, Resources, Source, StageSpec, TrackingSpec
from posttrain.names import quoted
from posttrain.suggest import did_you_mean
from posttrain.tracking import BACKENDS
from workflows.launchers import launch_problems, launcher_for
from workflows.launchers.runners import resolve_resources, stage_command
from workflows.planning.dag import find_cycle, order
from workflows.planning.data import check_pipeline_data
from workflows.planning.errors import PlanError
from workflows.planning.gates import plan_gate
from workflows.planning.gguf import plan_gguf
from workflows.planning.models import chat_template_problems, hub_model_problems, model_problems, tokenizer_problems
from workflows.planning.places import name_problems, run_dir_problems
from workflows.planning.trainer import trainer_problems
from workflows.planning.values import value_problems
from workflows.store.layout import default_store, store_problems


def absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


class Planner:
    """Builds the stage specs of one pipeline config; implements posttrain.stage_types.PlanContext."""

    def __init__(self, cfg: dict[str, Any]):
        self.config = cfg
        self.run_dir = absolute(cfg["run_dir"])
        cfg["store_dir"] = absolute(cfg.get("store_dir") or default_store())  # stage folders live there
        self.stages: dict[str, dict[str, Any]] = {
            n: s for n, s in (cfg.get("stages") or {}).items() if s.get("enabled", True)
        }
        self.problems: list[str] = []
        self.edges: dict[str, list[str]] = {}
        self.model_inputs: dict[str, list[tuple[str, str, str]]] = {}  # stage -> (key, upstream stage, kind needed)
        self.tracking = self._tracking(cfg["tracking"])
        self.gguf, gguf_problems = plan_gguf(cfg["model"])  # a GGUF model's file (workflows/planning/gguf.py)
        self.problems.extend(gguf_problems)
        self.notes: dict[str, list[str]] = {}  # plan lines of stage type hooks, per stage

    # ---------------------------------------------------------------- PlanContext

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def model(self, stage: str, key: str, ref: str, output: str = "model") -> ModelRef | None:
        """A `policy`/`reference`/`models[i]`/teacher/reward model resolved; records the edge or a problem.
        `output`: the kind of model it must be when it names a stage (checked by `_link`)."""
        model_cfg = self.config["model"]
        if ref in self.stages or ref == CHECKPOINT:
            if ref == stage:
                self.problem(f"stages.{stage}.{key}: a stage cannot start from itself")
                return None
            self.edges[stage].append(ref)
            self.model_inputs.setdefault(stage, []).append((key, ref, output))
            if ref == CHECKPOINT:
                given = model_cfg.get("name_or_path")
                return ModelRef(ref, given or self.output_dir(CHECKPOINT, "model"), CHECKPOINT,
                                tokenizer=model_cfg.get("tokenizer") if given else None,
                                revision=model_cfg.get("revision"), label=model_label(ref))
            return ModelRef(ref, self.output_dir(ref, "model"), ref, label=model_label(ref))
        where = f"stages.{stage}.{key}"
        if ref.startswith(HUB_PREFIX):
            self.problems.extend(hub_model_problems(where, ref.removeprefix(HUB_PREFIX), None))
            return ModelRef(ref, ref.removeprefix(HUB_PREFIX), label=model_label(ref))
        if looks_like_path(ref) or HUB_ID.match(ref):
            if Path(ref).expanduser().exists():
                self.problems.extend(model_problems(where, ref, needs_tokenizer=key != "reference"))
                return ModelRef(ref, absolute(ref), label=model_label(ref))
            if looks_like_path(ref):
                self.problem(f"{where}: no such model directory {quoted(ref)}")
                return None
            self.problems.extend(hub_model_problems(where, ref, None))
            return ModelRef(ref, ref, label=model_label(ref))  # a hub id, loaded by the stage
        options = sorted([*self.stages, CHECKPOINT])
        self.problem(f"stage '{stage}' needs '{ref}' ({key}), which the pipeline does not define "
                     f"(stages: {', '.join(options)}){did_you_mean(ref, options)}")
        return None

    def tokenizer(self) -> str | None:
        model = self.config["model"]
        if self.gguf:
            return self.gguf.tokenizer
        return model.get("tokenizer") or model.get("name_or_path")

    def note(self, stage: str, message: str) -> None:
        self.notes.setdefault(stage, []).append(message)

    # ---------------------------------------------------------------- pieces of a spec

    def output_dir(self, stage: str, output: str) -> str:
        return os.path.join(self.run_dir, stage, OUTPUT_DIRS[output])

    def _tracking(self, tracking: dict[str, Any]) -> TrackingSpec:
        """Absolute store path (stage processes may run elsewhere) and the experiment's name."""
        backend = tracking.get("backend", "none")
        if backend not in BACKENDS:
            self.problem(f"tracking.backend: '{backend}' is not one of {', '.join(BACKENDS)}"
                         f"{did_you_mean(backend, BACKENDS)}")
        if backend == "none":
            return TrackingSpec()
        uri = tracking["uri"]
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + absolute(uri[len("sqlite:///"):])
        register, names = tracking.get("register"), [*self.stages, CHECKPOINT]
        if register and register not in names:
            self.problem(f"tracking.register: '{register}' is not a stage of this pipeline "
                         f"(stages: {', '.join(names)}){did_you_mean(register, names)}")
        return TrackingSpec(backend, uri, tracking.get("experiment") or self.config["name"], register,
                            tracking.get("registered_model"))

    def _data(self, name: str, stage: dict[str, Any], stage_type: StageType) -> DataSpec | None:
        data = stage.get("data")
        if not stage_type.shapes:
            return None
        if data is None:
            self.problem(f"stages.{name}.data: a {stage['type']} stage needs data")
            return None
        if data["format"] not in stage_type.formats:
            self.problem(f"stages.{name}.data.format: a {stage['type']} stage takes "
                         f"{' or '.join(stage_type.formats)} data, not '{data['format']}'")
        groups: dict[str, list[Source]] = {}
        for group in ("sources", "eval_sources"):
            groups[group] = []
            for i, src in enumerate(data.get(group) or []):
                where = f"stages.{name}.data.{group}[{i}]"
                source = Source(**src)
                if source.stage:
                    if source.stage not in self.stages:
                        self.problem(f"{where}.stage: '{source.stage}' is not a stage of this pipeline")
                    else:
                        self.edges[name].append(source.stage)
                        source.path = self.output_dir(source.stage, "dataset")
                elif not source.path:
                    self.problem(f"{where}: give a `path` (file, folder or hub dataset id) or a `stage`")
                elif Path(source.path).expanduser().exists():
                    source.path = absolute(source.path)
                elif not HUB_ID.match(source.path) or names_data_file(source.path):
                    self.problem(f"{where}.path: no such file or folder '{source.path}'")
                groups[group].append(source)
        if not groups["sources"]:
            self.problem(f"stages.{name}.data.sources: no data source given")
        seed = data.get("seed")
        return DataSpec(data["format"], groups["sources"], groups["eval_sources"], data.get("eval_fraction") or 0.0,
                        data.get("shuffle", True), self.config["seed"] if seed is None else seed,
                        data.get("on_invalid", "error"))

    def _type_checks(self, name: str, stage: dict[str, Any], stage_type: StageType) -> None:
        """What the registry entry says a stage of this type may and must have."""
        kind = stage["type"]
        for other, entry in STAGE_TYPES.items():
            if entry.settings and other != kind and stage.get(other) is not None:
                self.problem(f"stages.{name}.{other}: only {other} stages take these settings; "
                             f"'{name}' is of type {kind}")
        if stage.get("models") and not stage_type.takes_models:
            self.problem(f"stages.{name}.models: only stages that measure models take `models`; "
                         f"'{name}' is of type {kind}")
        if not stage_type.trains and stage.get("trainer"):
            self.problem(f"stages.{name}.trainer: {kind} stages train nothing; their settings are "
                         f"stages.{name}.{kind}.*")
        if not stage_type.uses_policy and stage.get("policy") not in (None, CHECKPOINT):
            self.problem(f"stages.{name}.policy: {kind} stages take no policy; remove `policy`")
        if stage.get("reference") is not None and not stage_type.uses_reference:
            self.problem(f"stages.{name}.reference: a {kind} stage has no reference model")
        if stage_type.settings and stage.get(kind) is None:
            self.problem(f"stages.{name}.{kind}: {kind} stages need these settings "
                         f"(mount the defaults: - /stage@stages.{name}: {kind})")
        resources = stage["resources"]
        if stage_type.single_process and (resources.get("nodes") or 1) * (resources.get("processes_per_node") or 1) > 1:
            self.problem(f"stages.{name}.resources: {kind} stages run as one process; "
                         f"set nodes=1 and processes_per_node=1")
        data = stage.get("data") or {}
        if stage_type.shapes and not stage_type.trains and (data.get("eval_sources") or data.get("eval_fraction")):
            self.problem(f"stages.{name}.data: {kind} stages read only `sources` (their prompts); "
                         f"remove eval_sources / eval_fraction")

    def stage_spec(self, name: str, stage: dict[str, Any]) -> StageSpec:
        stage_type = STAGE_TYPES[stage["type"]]
        self._type_checks(name, stage, stage_type)
        resources = dict(stage["resources"])
        if stage_type.single_process:  # one process even where the launcher gives a node several GPUs
            resources["processes_per_node"] = 1
        peft = stage.get("peft") or self.config["peft"]
        deepspeed = stage.get("deepspeed")
        spec = StageSpec(
            name=name, type=stage["type"], stage_dir=os.path.join(self.run_dir, name),
            model_dir=self.output_dir(name, stage_type.output), seed=self.config["seed"],
            resources=Resources(**resolve_resources(resources, self.config["launcher"])), tracking=self.tracking,
            trainer=dict(stage.get("trainer") or {}), chat_template=self.config["model"].get("chat_template"),
            peft=peft if stage_type.trains and peft.get("method", "none") != "none" else None,
            deepspeed=((deepspeed if deepspeed is not None else self.config["deepspeed"]) or None)
            if stage_type.trains else None,
        )
        if spec.peft and spec.peft["method"] != "lora":
            self.problem(f"stages.{name}.peft.method: '{peft['method']}' is not one of none, lora")
        if stage_type.uses_policy:
            spec.policy = self.model(name, "policy", stage["policy"])
        if stage_type.uses_reference:
            ref = stage.get("reference")
            spec.reference = spec.policy if ref is None else self.model(name, "reference", ref)
        spec.data = self._data(name, stage, stage_type)
        if stage_type.trl_config:
            evaluates = bool(spec.data and (spec.data.eval_sources or spec.data.eval_fraction))
            self.problems.extend(trainer_problems(name, stage_type.trl_config, spec.trainer, evaluates))
        spec.gate, problems = plan_gate(name, stage.get("gate"), self.stages, self.run_dir)
        self.problems.extend(problems)
        if spec.gate:
            self.edges[name].append(spec.gate.stage)
        if stage_type.plan and stage.get(stage["type"]) is not None:
            for key, value in stage_type.plan(self, name, stage).items():
                setattr(spec, key, value)
        return spec

    def _model_group(self, needs_checkpoint: bool) -> None:
        """The `model` group: the starting model and tokenizer (when a stage starts from `checkpoint`),
        and the chat template every stage uses."""
        model = self.config["model"]
        given, tokenizer, revision = model.get("name_or_path"), model.get("tokenizer"), model.get("revision")
        if needs_checkpoint and given:
            self.problems.extend(model_problems("model.name_or_path", given, revision, needs_tokenizer=not tokenizer))
        if needs_checkpoint and tokenizer:
            self.problems.extend(tokenizer_problems("model.tokenizer", tokenizer, revision))
        if model.get("chat_template") and (found := chat_template_problems("model.chat_template",
                                                                             model["chat_template"])):
            self.problems.extend(found)
            model["chat_template"] = None  # the data checks go on without it; the plan fails anyway

    def checkpoint_spec(self) -> StageSpec:
        model = dict(self.config["model"])
        if self.gguf:  # the file the stage converts, by absolute path (fingerprinted by its bytes)
            model["gguf"] = {"path": self.gguf.path, "sha256": self.gguf.sha256, **asdict(self.gguf.header)}
        return StageSpec(
            name=CHECKPOINT, type=CHECKPOINT, stage_dir=os.path.join(self.run_dir, CHECKPOINT),
            model_dir=model["name_or_path"] or self.output_dir(CHECKPOINT, "model"), seed=self.config["seed"],
            resources=Resources(time=self.config["launcher"].get("time")), tracking=self.tracking, model=model,
        )

    def _link(self, specs: dict[str, StageSpec]) -> None:
        """Checks that need every spec: a model input must be a stage that saves a model, a data input
        one that writes a dataset; a measured model gets the reference it was trained against."""
        # a stage of an unknown type is reported by `build`; it has no registry entry to check against
        types = {n: s["type"] for n, s in self.stages.items() if s["type"] in STAGE_TYPES} | {CHECKPOINT: CHECKPOINT}
        for name, spec in specs.items():
            for key, up, kind in self.model_inputs.get(name, []):
                if up in types and STAGE_TYPES[types[up]].output != kind:
                    makers = ", ".join(t for t, e in STAGE_TYPES.items() if e.output == kind)
                    self.problem(f"stages.{name}.{key}: '{up}' is a {types[up]} stage; it saves "
                                 f"{STAGE_TYPES[types[up]].output}, not a {kind.replace('_', ' ')}"
                                 + (f" (stages that do: {makers})" if kind != "model" else ""))
            makers = ", ".join(t for t, e in STAGE_TYPES.items() if e.output == "dataset")
            for group in ("sources", "eval_sources"):
                for i, source in enumerate(getattr(spec.data, group) if spec.data else []):
                    up = source.stage
                    if up in types and STAGE_TYPES[types[up]].output != "dataset":
                        self.problem(f"stages.{name}.data.{group}[{i}].stage: '{up}' is a {types[up]} stage; it "
                                     f"writes {STAGE_TYPES[types[up]].output}, not a dataset (stages that do: "
                                     f"{makers})")
            for model in spec.models:
                upstream = specs.get(model.stage or "")
                if upstream and upstream.reference:
                    model.reference = ModelRef(upstream.reference.ref, upstream.reference.path)

    def _force(self, names: list[str]) -> None:
        force = self.config.get("force") or []
        for name in [force] if isinstance(force, str) else force:
            if name != "all" and name not in names:
                self.problem(f"force: '{name}' is not a stage of this plan (stages: {', '.join(names)}, or all)"
                             f"{did_you_mean(name, names)}")

    def build(self) -> Plan:
        specs: dict[str, StageSpec] = {}
        self.problems.extend(name_problems(self.config) + run_dir_problems(self.run_dir, str(self.config["run_dir"])))
        self.problems.extend(value_problems(self.config))  # posttrain's own keys against their domains
        refs = [str(s.get(k)) for s in self.stages.values() for k in ("policy", "reference")] + [
            str(m) for s in self.stages.values() for m in s.get("models") or []]
        self._model_group(needs_checkpoint=CHECKPOINT in refs)
        for name, stage in self.stages.items():
            self.edges[name] = []
            if name == CHECKPOINT:
                self.problem(f"stages.{name}: '{CHECKPOINT}' is reserved for the starting model (`model` group)")
            elif stage["type"] not in STAGE_TYPES or stage["type"] == CHECKPOINT:
                types = [t for t in STAGE_TYPES if t != CHECKPOINT]
                self.problem(f"stages.{name}.type: unknown stage type '{stage['type']}' "
                             f"(known: {', '.join(types)}){did_you_mean(stage['type'], types)}")
            else:
                specs[name] = self.stage_spec(name, stage)
        self._link(specs)
        model = self.config["model"]
        if self.gguf:
            model = dict(model, tokenizer=self.tokenizer(),
                         context_length=self.gguf.header.context_length if self.gguf.header else None)
        data_problems, data_notes = check_pipeline_data(specs, model)
        self.problems.extend(data_problems)
        self.problems.extend(launch_problems(self.config, self.stages, specs))
        self.problems.extend(store_problems(self.config["store_dir"], self.run_dir, [CHECKPOINT, *self.stages]))
        if not self.stages:
            self.problem("the pipeline defines no stages (did you forget +pipeline=<name>?)")
        if cycle := find_cycle(self.edges):
            self.problem(f"cycle: {' -> '.join(cycle)}")
        needs_checkpoint = any(CHECKPOINT in ups for ups in self.edges.values())
        self._force([*([CHECKPOINT] if needs_checkpoint else []), *self.stages])
        if self.problems:
            raise PlanError(self.config["name"], self.problems)

        self.rendezvous = launcher_for(self.config["launcher"]["name"]).rendezvous
        planned: list[PlannedStage] = []
        if needs_checkpoint:
            external = bool(self.config["model"].get("name_or_path"))
            planned.append(self._planned(self.checkpoint_spec(), [], external=external))
        for name in order(self.edges, list(self.stages)):
            ups = list(dict.fromkeys(self.edges[name]))
            planned.append(self._planned(specs[name], ups, notes=self.notes.get(name, []) + data_notes.get(name, [])))
        return Plan(self.config["name"], self.run_dir, planned, self.config, self.tracking)

    def _planned(self, spec: StageSpec, ups: list[str], external: bool = False,
                 notes: list[str] | None = None) -> PlannedStage:
        module = STAGE_TYPES[spec.type].module
        command = [] if external else stage_command(asdict(spec.resources), module,
                                                     os.path.join(spec.stage_dir, STAGE_YAML),
                                                     rendezvous=self.rendezvous)
        return PlannedStage(spec.name, spec.type, ups, spec, command, external=external,
                            reason="given" if external else "new", notes=notes or [])

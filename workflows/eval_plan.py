"""Plan-time side of the eval, generate and onpolicy stage types, and of every stage's `gate`.

The planner (workflows/plan.py) calls `extra_spec` for each stage and `link_specs` once all specs
exist. Everything here is cheap: files are read as JSON lines, a checker's module is found with
`importlib.util.find_spec` and its source parsed, never imported.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflows.commands import resolve_resources
from workflows.data_files import BadRow, SourceError, iter_rows
from workflows.data_formats import check_row
from workflows.gates import plan_gate
from workflows.registry import STAGE_TYPES

if TYPE_CHECKING:
    from workflows.plan import _Planner

CHECKPOINT = "checkpoint"
SETTINGS_BLOCKS = ("eval", "generate", "onpolicy")  # a stage type's own settings, under its type's name
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHOW_ROWS = 5  # bad rows listed per file


def model_label(ref: str) -> str:
    """How a model is named in an eval's metrics: its stage name, or the last part of a dir or hub id."""
    return ref.removeprefix("hf:").rstrip("/").rsplit("/", 1)[-1] or ref


def _output(stage_type: str) -> str:
    return STAGE_TYPES[stage_type].output if stage_type in STAGE_TYPES else "model"


def extra_spec(planner: _Planner, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    """Spec keys for the stage's gate and its type's own settings; records edges and problems."""
    out: dict[str, Any] = {}
    stype, kind = STAGE_TYPES[stage["type"]], stage["type"]
    gate, upstream, problems = plan_gate(name, stage.get("gate"), planner.stages, planner.run_dir)
    planner.problems.extend(problems)
    if upstream:
        planner.edges[name].append(upstream)
    if gate:
        out["gate"] = gate
    for block in SETTINGS_BLOCKS:
        if stage.get(block) is not None and block != kind:
            planner.problems.append(f"stages.{name}.{block}: only {block} stages take these settings; "
                                    f"'{name}' is of type {kind}")
    if stage.get("models") and kind != "eval":
        planner.problems.append(f"stages.{name}.models: only eval stages measure `models`; '{name}' is of type {kind}")
    if not stype.trains and stage.get("trainer"):
        planner.problems.append(f"stages.{name}.trainer: {kind} stages train nothing; their settings are "
                                f"stages.{name}.{kind}.*")
    if not stype.uses_policy and stage.get("policy") not in (None, CHECKPOINT):
        what = "measure `models`" if kind == "eval" else "write with `generate.teacher`"
        planner.problems.append(f"stages.{name}.policy: {kind} stages {what}, not a policy; remove `policy`")
    if kind in SETTINGS_BLOCKS:
        if stage.get(kind) is None:
            planner.problems.append(f"stages.{name}.{kind}: {kind} stages need these settings "
                                    f"(mount the defaults: - /stage@stages.{name}: {kind})")
            return out
        resources = stage["resources"]
        if (resources.get("nodes") or 1) * (resources.get("processes_per_node") or 1) > 1:
            planner.problems.append(f"stages.{name}.resources: {kind} stages run as one process; "
                                    f"set nodes=1 and processes_per_node=1")
        # One process even where the launcher gives a node several GPUs (one process per GPU by default).
        out["resources"] = resolve_resources({**resources, "processes_per_node": 1}, planner.cfg["launcher"])
        out["model_dir"] = os.path.join(planner.run_dir, name, "results" if kind == "eval" else "dataset")
        out.update(peft=None, deepspeed=None)  # no training: the pipeline-wide peft/deepspeed do not apply
        data = stage.get("data") or {}
        if kind != "eval" and (data.get("eval_sources") or data.get("eval_fraction")):
            planner.problems.append(f"stages.{name}.data: {kind} stages read only `sources` (their prompts); "
                                    f"remove eval_sources / eval_fraction")
        out.update({"eval": _eval_spec, "generate": _generate_spec, "onpolicy": _onpolicy_spec}[kind](
            planner, name, stage))
    return out


def link_specs(planner: _Planner, specs: dict[str, dict[str, Any]]) -> None:
    """Checks that need every spec: a model input must be a stage that saves a model, a data input
    one that writes a dataset; an evaluated model gets its upstream's reference (sft for dpo)."""
    types = {n: s["type"] for n, s in planner.stages.items()}
    for name, spec in specs.items():
        refs = [("policy", spec.get("policy")), ("reference", spec.get("reference"))]
        refs += [(f"models[{i}]", m) for i, m in enumerate(spec.get("models") or [])]
        refs += [(f"generate.{k}.model", (spec.get("generate") or {}).get(k)) for k in ("teacher", "judge")]
        for key, ref in refs:
            up = (ref or {}).get("stage")
            if up in types and _output(types[up]) != "model":
                planner.problems.append(f"stages.{name}.{key}: '{up}' is a {types[up]} stage; it saves "
                                        f"{_output(types[up])}, not a model")
        for group in ("sources", "eval_sources"):
            for i, source in enumerate((spec.get("data") or {}).get(group) or []):
                up = source.get("stage")
                if up in types and _output(types[up]) != "dataset":
                    planner.problems.append(
                        f"stages.{name}.data.{group}[{i}].stage: '{up}' is a {types[up]} stage; it writes "
                        f"{_output(types[up])}, not a dataset (stages that do: generate, onpolicy)")
        for model in spec.get("models") or []:
            upstream = specs.get(model.get("stage") or "")
            if upstream and upstream.get("reference"):
                ref = upstream["reference"]
                model["reference"] = {"ref": ref["ref"], "path": ref["path"]}


# ------------------------------------------------------------------------------------------ eval


def _model(planner: _Planner, name: str, key: str, ref: str) -> dict[str, Any] | None:
    """A model input as a stage loads it: path, tokenizer, revision (the planner records the edge)."""
    resolved = planner.resolve_model_ref(name, key, ref)
    if resolved is None:
        return None
    model_cfg = planner.cfg["model"]
    at_checkpoint = resolved["ref"] == CHECKPOINT
    tokenizer = resolved["path"]
    if at_checkpoint and planner.checkpoint_external():
        tokenizer = model_cfg.get("tokenizer") or resolved["path"]
    return {**resolved, "label": model_label(ref), "tokenizer": tokenizer,
            "revision": model_cfg.get("revision") if at_checkpoint else None}


def _local_file(planner: _Planner, where: str, path: str | None) -> str | None:
    if path is None:
        return None
    local = Path(path).expanduser()
    if not local.is_file():
        planner.problems.append(f"{where}: no such file '{path}'")
        return None
    return str(local.resolve())


def _eval_spec(planner: _Planner, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    where = f"stages.{name}"
    settings = dict(stage["eval"])
    models: list[dict[str, Any]] = []
    for i, ref in enumerate(stage.get("models") or []):
        if (model := _model(planner, name, f"models[{i}]", ref)) is None:
            continue
        if same := next((m for m in models if m["label"] == model["label"]), None):
            why = "is listed twice" if same["ref"] == ref else f"has the same metric name as '{same['ref']}'"
            planner.problems.append(f"{where}.models[{i}]: '{ref}' {why} (metrics are named {model['label']}/...)")
            continue
        models.append(model)
    if not stage.get("models"):
        planner.problems.append(f"{where}.models: name the models to measure, e.g. [checkpoint, sft, dpo]")
    if stage.get("data") is not None:
        planner.problems.append(f"{where}.data: eval stages read {where}.eval.tasks and .pairs, not `data`")
    if not settings.get("tasks") and not settings.get("pairs"):
        planner.problems.append(f"{where}.eval: give `tasks` (prompts with checkable answers), `pairs` "
                                f"(preference pairs) or both")
    for key in ("tasks", "pairs"):
        settings[key] = _local_file(planner, f"{where}.eval.{key}", settings.get(key))
    if settings["tasks"]:
        planner.problems.extend(_rows_problems(f"{where}.eval.tasks", settings["tasks"], task_row_problems))
    if settings["pairs"]:
        planner.problems.extend(_rows_problems(f"{where}.eval.pairs", settings["pairs"],
                                               lambda row: check_row(row, "preference")))
    planner.problems.extend(_positive(f"{where}.eval", settings, ("max_rows", "max_new_tokens", "batch_size",
                                                                  "max_length")))
    planner.problems.extend(target_problems(f"{where}.eval.checker", settings.get("checker")))
    return {"models": models, "eval": settings}


def task_row_problems(row: Any) -> list[str]:
    """Why a held-out task row cannot be scored: it needs a prompt and a reference answer."""
    if not isinstance(row, dict):
        return ["expected an object with 'prompt' and 'answer'"]
    problems = []
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        if not prompt.strip():
            problems.append("'prompt' is empty")
    elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        if any(not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str) for m in prompt):
            problems.append("'prompt' messages need a string 'role' and 'content'")
        elif prompt[-1]["role"] != "user":
            problems.append(f"'prompt' must end with a user message, not {prompt[-1]['role']!r}")
    else:
        problems.append("'prompt' must be a string or a list of {role, content} messages")
    if not isinstance(row.get("answer"), (str, int, float)) or isinstance(row.get("answer"), bool):
        problems.append("'answer' (the reference answer the checker compares with) is missing or not a string")
    if row.get("task") is not None and not isinstance(row["task"], str):
        problems.append("'task' must be a string")
    if row.get("seen") is not None and not isinstance(row["seen"], bool):
        problems.append("'seen' must be true or false")
    return problems


def _rows_problems(where: str, path: str, check) -> list[str]:
    """Every bad row of a small held-out file, grouped by reason, row numbers as the user sees them."""
    by_reason: dict[str, list[int]] = {}
    count = 0
    try:
        for number, row in iter_rows(Path(path)):
            count += 1
            reasons = [row.reason] if isinstance(row, BadRow) else check(row)
            for reason in reasons:
                by_reason.setdefault(reason, []).append(number)
    except (SourceError, OSError) as err:
        return [f"{where}: {err}"]
    if not count:
        return [f"{where}: {path} has no rows"]
    out = []
    for reason, rows in by_reason.items():
        more = f" (+{len(rows) - SHOW_ROWS} more)" if len(rows) > SHOW_ROWS else ""
        shown = ", ".join(map(str, rows[:SHOW_ROWS])) + more
        out.append(f"{where}: {os.path.basename(path)} row{'s' * (len(rows) > 1)} {shown}: {reason}")
    return out


def _positive(where: str, settings: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [f"{where}.{k}: must be a positive number, got {settings[k]}" for k in keys
            if settings.get(k) is not None and settings[k] <= 0]


def target_problems(where: str, config: dict[str, Any] | None) -> list[str]:
    """A `{_target_: module.function, **kwargs}` checker: its module must exist and define the name.

    The module is located and its source parsed, never imported: the planner stays light.
    """
    target = (config or {}).get("_target_")
    if not isinstance(target, str) or "." not in target:
        return [f"{where}._target_: give a function's import path module.function, e.g. stages.demo_tasks.check"]
    module, _, function = target.rpartition(".")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        return [f"{where}._target_: no module '{module}' importable here (install it or put it on PYTHONPATH)"]
    origin = found.origin or ""
    if origin.endswith(".py") and os.path.isfile(origin):
        try:
            tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
        except (SyntaxError, OSError, UnicodeDecodeError):
            return []
        if function not in _top_level_names(tree) and not _has_dynamic_names(tree):
            return [f"{where}._target_: module '{module}' ({origin}) defines no '{function}'"]
    return []


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _has_dynamic_names(tree: ast.Module) -> bool:
    """`from x import *` or a module `__getattr__`: the name may exist without being written."""
    return any((isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names))
               or (isinstance(n, ast.FunctionDef) and n.name == "__getattr__") for n in tree.body)


# -------------------------------------------------------------------------------- generate, onpolicy


def _teacher_spec(planner: _Planner, name: str, where: str, teacher: dict[str, Any]) -> dict[str, Any] | None:
    """A teacher or judge: an OpenAI-compatible endpoint, or a local model (an edge when it is a stage)."""
    teacher = dict(teacher)
    problems = _positive(where, teacher, ("max_new_tokens", "batch_size", "timeout"))
    if teacher.get("max_retries") is not None and teacher["max_retries"] < 0:
        problems.append(f"{where}.max_retries: must be 0 or more, got {teacher['max_retries']}")
    if not 0 <= (teacher.get("temperature") or 0):
        problems.append(f"{where}.temperature: must be 0 or more")
    key_env = teacher.get("api_key_env")
    if teacher.get("endpoint"):
        if not re.match(r"^https?://[^/\s]+", teacher["endpoint"]):
            problems.append(f"{where}.endpoint: '{teacher['endpoint']}' is not an http(s):// URL "
                            f"(an OpenAI-compatible base URL such as http://localhost:8000/v1)")
        if not teacher.get("model"):
            problems.append(f"{where}.model: name the model the endpoint serves (the request's `model`)")
        if key_env is not None:
            env = {**os.environ, **(planner.cfg["launcher"].get("env") or {})}
            if not ENV_NAME.match(key_env):
                problems.append(f"{where}.api_key_env: '{key_env}' is not an environment variable NAME "
                                f"(write the variable's name, never the key itself)")
            elif not env.get(key_env):
                problems.append(f"{where}.api_key_env: environment variable {key_env} is not set; export it "
                                f"before running (posttrain stores only its name)")
    else:
        if key_env is not None:
            problems.append(f"{where}.api_key_env: only an `endpoint` teacher takes an API key")
        if not teacher.get("model"):
            problems.append(f"{where}: give `model` (a stage name, checkpoint, a dir or hub id) or an `endpoint`")
    planner.problems.extend(problems)
    if problems:
        return None
    if teacher.get("endpoint"):
        return {**teacher, "endpoint": teacher["endpoint"].rstrip("/")}
    model = _model(planner, name, where.removeprefix(f"stages.{name}.") + ".model", teacher["model"])
    return {**teacher, **model} if model else None


def _generate_spec(planner: _Planner, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    where = f"stages.{name}.generate"
    settings = dict(stage["generate"])
    if settings.get("mode") not in ("self_instruct", "distill"):
        planner.problems.append(f"{where}.mode: '{settings.get('mode')}' is not one of self_instruct, distill")
    planner.problems.extend(_positive(where, settings, ("num_instructions", "examples_per_request",
                                                        "instructions_per_request", "responses_per_prompt",
                                                        "ngram")))
    if not 0 < (settings.get("dedup_threshold") or 0) <= 1:
        planner.problems.append(f"{where}.dedup_threshold: must be in (0, 1], got {settings.get('dedup_threshold')}"
                                f" (1 drops exact duplicates only)")
    settings["teacher"] = _teacher_spec(planner, name, f"{where}.teacher", settings["teacher"])
    judge = settings.get("judge") or {}
    if judge.get("model") or judge.get("endpoint"):
        settings["judge"] = _teacher_spec(planner, name, f"{where}.judge", judge)
    else:
        settings["judge"] = None
        planner.problems.extend(target_problems(f"{where}.verifier", settings.get("verifier")))
    teacher = settings["teacher"] or {}
    return {"generate": settings, "tokenizer": teacher.get("tokenizer"), "revision": teacher.get("revision")}


def _onpolicy_spec(planner: _Planner, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    where = f"stages.{name}.onpolicy"
    settings = dict(stage["onpolicy"])
    planner.problems.extend(_positive(where, settings, ("samples_per_prompt", "max_new_tokens", "batch_size",
                                                        "temperature")))
    if (settings.get("samples_per_prompt") or 0) < 2 and not settings.get("reference_fallback"):
        planner.problems.append(f"{where}.samples_per_prompt: one sample cannot be both chosen and rejected; "
                                f"sample 2 or more, or set reference_fallback=true")
    planner.problems.extend(target_problems(f"{where}.verifier", settings.get("verifier")))
    return {"onpolicy": settings}

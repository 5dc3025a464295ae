"""Verifiers: programs that say whether a model's output solves a prompt. Stdlib only.

The eval, generate and onpolicy stages call them; the planner checks their import paths without
importing them (`target_problems`).

A verifier is any function called with keywords `task, prompt, answer, output` that returns a
truth value, named by import path in the config with extra keyword arguments beside it:

    checker: {_target_: mypkg.checks.exact_json, strict: true}   # -> exact_json(..., strict=True)

`prompt` is the text of the last user message, `answer` the reference answer (None when there is
none, e.g. an instruction a teacher just wrote), `task` the row's `task` column (None without).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Callable

Verifier = Callable[..., Any]


def load_verifier(config: dict[str, Any]) -> Verifier:
    """The function `config['_target_']` names, with the config's other keys bound as keyword arguments.

    Raises:
        SystemExit: the module or function does not exist (the planner checks this first).
    """
    target = config["_target_"]
    module, _, name = target.rpartition(".")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise SystemExit(f"verifier {target}: cannot import it ({err})") from None
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    return functools.partial(function, **kwargs) if kwargs else function


def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    """A prompt as the checker sees it: a string as is, a conversation as its last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else str(prompt[-1]["content"])


def response_text(response: str | list[dict[str, Any]]) -> str:
    """A response (a string, or assistant messages as trainers take them) as plain text."""
    if isinstance(response, str):
        return response
    return "".join(str(m.get("content", "")) for m in response if m.get("role", "assistant") == "assistant")


def verify(verifier: Verifier, task: str | None, prompt: str, answer: str | None, output: str) -> bool:
    """One verdict; a checker that raises counts as a wrong output (the model wrote something odd)."""
    try:
        return bool(verifier(task=task, prompt=prompt, answer=answer, output=output))
    except Exception:  # noqa: BLE001 - a user's checker choking on garbage output is a wrong answer
        return False


def score(verifier: Verifier, task: str | None, prompt: str, answer: str | None, output: str) -> float:
    """A verifier's result as a reward: a number as is (partial credit), a truth value as 1.0 or 0.0.

    A checker that raises, or returns NaN or infinity, gives 0.0: the model wrote something odd,
    which is a wrong answer, not a reason to stop training.
    """
    try:
        result = verifier(task=task, prompt=prompt, answer=answer, output=output)
    except Exception:  # noqa: BLE001 - a user's checker choking on garbage output is a wrong answer
        return 0.0
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return float(result) if math.isfinite(result) else 0.0
    try:
        return float(bool(result))
    except Exception:  # noqa: BLE001 - an object whose truth value raises (a numpy array) is no verdict
        return 0.0


def prompt_and_reference(row: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """(prompt messages, reference answer or None) of a trainer row: a conversation (up to its last
    assistant turn), prompt/completion, a preference pair (`chosen` is the reference) or a prompt
    with an optional `answer`."""
    if "messages" in row:
        messages = list(row["messages"])
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            return messages, None
        return messages[:last], str(messages[last]["content"])
    prompt = row["prompt"]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    reference = next((row[k] for k in ("completion", "chosen", "answer") if row.get(k) is not None), None)
    return prompt, None if reference is None else response_text(reference)


def target_problems(where: str, config: dict[str, Any] | None) -> list[str]:
    """A `{_target_: module.function, **kwargs}` checker: its module must exist and define the name.

    The module is located and its source parsed, never imported: the planner stays light.
    """
    target = (config or {}).get("_target_")
    if not isinstance(target, str) or "." not in target:
        return [f"{where}._target_: give a function's import path module.function, e.g. demo.tasks.check"]
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

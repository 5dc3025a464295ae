"""Verifiers: programs that say whether a model's output solves a prompt. Stdlib only.

A verifier is any function called with keywords `task, prompt, answer, output` that returns a
truth value, named by import path in the config with extra keyword arguments beside it:

    checker: {_target_: mypkg.checks.exact_json, strict: true}   # -> exact_json(..., strict=True)

`prompt` is the text of the last user message, `answer` the reference answer (None when there is
none, e.g. an instruction a teacher just wrote), `task` the row's `task` column (None without).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

from stages import demo_tasks

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


def demo_check(task: str | None, prompt: str, answer: str | None, output: str) -> bool:
    """The demo tasks' checker, also for prompts without a reference answer (solved from the prompt)."""
    if answer is None:
        answer = demo_tasks.solve(prompt)
    if answer is None:
        return False  # no reference, and no demo task can answer the prompt
    return demo_tasks.check(task or demo_tasks.task_of(prompt) or "", prompt, str(answer), output)


def prompt_and_reference(row: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """(prompt messages, reference answer or None) of a trainer row: a conversation (up to its last
    assistant turn), prompt/completion or a preference pair (`chosen` is the reference)."""
    if "messages" in row:
        messages = list(row["messages"])
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            return messages, None
        return messages[:last], str(messages[last]["content"])
    prompt = row["prompt"]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    reference = row.get("completion", row.get("chosen"))
    return prompt, None if reference is None else response_text(reference)

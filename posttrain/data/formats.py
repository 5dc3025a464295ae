"""Data formats: what a row must look like, and the columns a TRL trainer receives from it (the
table: README.md, "Data"). One `DataFormat` record per format; pure Python, so the planner and the
stage check and convert the very same rows. Responses are never edited.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
# ShareGPT speaker names (`from`) -> chat roles; covers FastChat, LLaMA-Factory and Axolotl dumps.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "function_call": "assistant", "tool": "tool",
                  "observation": "tool"}
PROMPT_END_ROLES = ("user", "tool", "assistant")  # TRL renders a prompt ending on any other role as an error


def _kind(value: Any) -> str:
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


def is_conversation(value: Any) -> bool:
    """A list of {role, content} messages (TRL's `is_conversational` test, for one column)."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def check_messages(messages: Any, column: str, roles: dict[str, str] | tuple[str, ...] = CHAT_ROLES,
                   role_key: str = "role", content_key: str = "content", need_assistant: bool = True) -> list[str]:
    """Problems of one list of chat messages (`column` names it in the messages)."""
    if not isinstance(messages, list):
        return [f"'{column}' must be a list of messages, got {_kind(messages)}"]
    if not messages:
        return [f"'{column}' is empty"]
    problems: list[str] = []
    has_assistant = False
    for i, message in enumerate(messages, 1):
        where = f"'{column}' message {i}"
        if not isinstance(message, dict):
            problems.append(f"{where} is {_kind(message)}, not an object with '{role_key}' and '{content_key}'")
            continue
        role = message.get(role_key)
        if role is None:
            problems.append(f"{where} has no '{role_key}'" + (f" (has: {', '.join(map(str, message))})"))
            continue
        if role not in roles:
            known = list(roles)
            close = difflib.get_close_matches(str(role), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            if isinstance(roles, tuple) and role in SHAREGPT_ROLES:
                hint = "; ShareGPT speaker names need format: sharegpt"
            problems.append(f"{where} has unknown role {role!r} (known: {', '.join(known)}){hint}")
            continue
        role = roles[role] if isinstance(roles, dict) else role
        content = message.get(content_key)
        if role == "assistant":
            has_assistant = True
            if content is None and message.get("tool_calls"):
                continue  # a tool call: no text content is fine
        if not isinstance(content, str):
            problems.append(f"{where} ({role}): '{content_key}' must be a string, got {_kind(content)}")
        elif _is_blank(content) and role != "system":
            problems.append(f"{where} ({role}) is empty")
    if need_assistant and not has_assistant and not problems:
        problems.append(f"'{column}' has no assistant turn: nothing to learn from")
    return problems


def _check_text(row: dict[str, Any], column: str) -> list[str]:
    value = row.get(column)
    if not isinstance(value, str):
        return [f"'{column}' must be a string, got {_kind(value)}"]
    return [f"'{column}' is empty"] if _is_blank(value) else []


def _check_prompt(prompt: Any, column: str = "prompt") -> list[str]:
    if isinstance(prompt, str):
        return [f"'{column}' is empty"] if _is_blank(prompt) else []
    problems = check_messages(prompt, column, need_assistant=False)
    if not problems and prompt[-1].get("role") not in PROMPT_END_ROLES:
        problems.append(f"'{column}' ends with a {prompt[-1]['role']} message; end it with a user turn")
    return problems


def _check_response(response: Any, column: str, conversational: bool) -> list[str]:
    if conversational:
        if not isinstance(response, list):
            return [f"'{column}' must be a list of messages like the prompt, got {_kind(response)}"]
        return check_messages(response, column)
    if not isinstance(response, str):
        return [f"'{column}' must be a string like the prompt, got {_kind(response)}"]
    return [f"'{column}' is empty"] if _is_blank(response) else []


def split_implicit_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected) from two full sequences sharing a prefix; TRL's `extract_prompt`.

    Strings split at the first differing character (a space before it goes with the answers);
    conversations at the first differing message.
    """
    idx = 0
    limit = min(len(chosen), len(rejected))
    while idx < limit and chosen[idx] == rejected[idx]:
        idx += 1
    if isinstance(chosen, str) and idx > 0 and chosen[idx - 1] == " ":
        idx -= 1
    return chosen[:idx], chosen[idx:], rejected[idx:]


def has_explicit_prompt(row: dict[str, Any]) -> bool:
    """TRL's `maybe_extract_prompt` rule: a `prompt` counts only when it is the same kind as `chosen`."""
    prompt = row.get("prompt")
    return prompt is not None and is_conversation(prompt) == is_conversation(row.get("chosen"))


def _check_preference(row: dict[str, Any]) -> list[str]:
    chosen, rejected = row["chosen"], row["rejected"]
    conversational = isinstance(chosen, list)
    if not isinstance(chosen, (str, list)):
        return [f"'chosen' must be a string or a list of messages, got {_kind(chosen)}"]
    if has_explicit_prompt(row):
        problems = _check_prompt(row["prompt"])
        problems += _check_response(chosen, "chosen", conversational)
        problems += _check_response(rejected, "rejected", conversational)
    else:
        problems = _check_response(rejected, "rejected", conversational) if isinstance(rejected, type(chosen)) else [
            f"'rejected' must be {_kind(chosen)} like 'chosen', got {_kind(rejected)}"]
        if conversational:  # the full conversations are checked below, after the split
            problems += check_messages(chosen, "chosen", need_assistant=False)
        elif _is_blank(chosen):
            problems.append("'chosen' is empty")
        if problems:
            return problems
        if chosen == rejected:
            return ["'chosen' and 'rejected' are identical: the pair teaches nothing"]
        prompt, chosen_rest, rejected_rest = split_implicit_prompt(chosen, rejected)
        if not prompt or _is_blank(prompt):
            return ["no prompt: 'chosen' and 'rejected' share no common start and there is no 'prompt' column"]
        problems += _check_prompt(prompt, "prompt (shared start of chosen/rejected)")
        problems += _check_response(chosen_rest, "chosen", conversational) if chosen_rest else [
            "'chosen' is empty after its shared start with 'rejected'"]
        problems += _check_response(rejected_rest, "rejected", conversational) if rejected_rest else [
            "'rejected' is empty after its shared start with 'chosen'"]
    if not problems and chosen == rejected:
        problems.append("'chosen' and 'rejected' are identical: the pair teaches nothing")
    return problems


def _chat(messages: list[dict[str, Any]], roles: dict[str, str] | None = None) -> list[dict[str, Any]]:
    if roles is None:  # role and content first: the same message hashes the same whatever the key order
        return [{"role": m["role"], "content": m.get("content"), **m} for m in messages]
    return [{"role": roles[m["from"]], "content": m["value"]} for m in messages]


def is_conversational(trainer_row: dict[str, Any]) -> bool:
    """Whether a trainer row goes through the chat template (TRL decides this from the first row)."""
    key = "messages" if "messages" in trainer_row else "text" if "text" in trainer_row else "prompt"
    return isinstance(trainer_row[key], list)


def last_turn_as_completion(row: dict[str, Any]) -> dict[str, Any]:
    """A conversation as a conversational prompt/completion pair: every message before its last
    assistant turn, then that turn (messages after it carry no loss and are left out)."""
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def sft_common_shape(kinds: set[tuple[str, bool]]) -> tuple[str, bool] | None:
    """One (shape, conversational) that SFT sources of these kinds can all take, or None.

    TRL tokenizes a dataset one way (decided from its first row), so a mixture is made uniform:
    conversations and conversational prompt/completion pairs all become `messages`; plain
    text becomes a prompt/completion pair with an empty prompt (loss on every token, as for text).
    Conversations and plain strings cannot be mixed: the chat template would apply to one only.
    """
    if len(kinds) <= 1:
        return next(iter(kinds), None)
    conversational = {c for _, c in kinds}
    if len(conversational) > 1:
        return None
    return ("messages", True) if conversational == {True} else ("prompt_completion", False)


def to_common_shape(row: dict[str, Any], common: tuple[str, bool]) -> dict[str, Any]:
    """A trainer row in the mixture's common SFT shape (see `sft_common_shape`)."""
    shape, _ = common
    if shape == "prompt_completion" and "messages" in row:  # the last-turn form (posttrain/data/check.py)
        return last_turn_as_completion(row)
    if shape == "messages" and "prompt" in row:
        return {"messages": row["prompt"] + row["completion"]}
    if shape == "prompt_completion" and "text" in row:
        return {"prompt": "", "completion": row["text"]}
    return row


# ------------------------------------------------------------------------------------------- records
# One record per format: adding a format is its check, its conversion and a line in FORMATS.


def _check_alpaca(row: dict[str, Any]) -> list[str]:
    problems = _check_text(row, "instruction") + _check_text(row, "output")
    for optional in ("input", "system"):
        if row.get(optional) is not None and not isinstance(row[optional], str):
            problems.append(f"'{optional}' must be a string, got {_kind(row[optional])}")
    return problems


def _to_alpaca(row: dict[str, Any], shape: str) -> list[dict[str, Any]]:
    user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return [{"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]}]


def _check_prompt_completion(row: dict[str, Any]) -> list[str]:
    prompt = row["prompt"]
    if not isinstance(prompt, (str, list)):
        return [f"'prompt' must be a string or a list of messages, got {_kind(prompt)}"]
    return _check_prompt(prompt) + _check_response(row["completion"], "completion", isinstance(prompt, list))


def _check_unpaired(row: dict[str, Any]) -> list[str]:
    problems = _check_prompt_completion(row)
    if isinstance(row["prompt"], (str, list)) and not isinstance(row["label"], bool):
        problems.append(f"'label' must be true or false, got {row['label']!r} ({_kind(row['label'])})")
    return problems


def _check_prompt_only(row: dict[str, Any]) -> list[str]:
    if not isinstance(row["prompt"], (str, list)):
        return [f"'prompt' must be a string or a list of messages, got {_kind(row['prompt'])}"]
    problems = _check_prompt(row["prompt"])
    answer = row.get("answer")
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float))):
        problems.append(f"'answer' (the reference answer verifiers compare with) must be a string, got {_kind(answer)}")
    elif _is_blank(answer):
        problems.append("'answer' is empty; drop the column (no reference) or fill it")
    if row.get("task") is not None and not isinstance(row["task"], str):
        problems.append(f"'task' must be a string, got {_kind(row['task'])}")
    return problems


def _to_prompt_only(row: dict[str, Any], shape: str) -> list[dict[str, Any]]:
    answer = row.get("answer")
    return [{"prompt": row["prompt"], "answer": None if answer is None else str(answer), "task": row.get("task")}]


def _to_preference(row: dict[str, Any], shape: str) -> list[dict[str, Any]]:
    if has_explicit_prompt(row):
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    else:
        prompt, chosen, rejected = split_implicit_prompt(row["chosen"], row["rejected"])
    if shape == "unpaired_preference":
        return [{"prompt": prompt, "completion": chosen, "label": True},
                {"prompt": prompt, "completion": rejected, "label": False}]
    return [{"prompt": prompt, "chosen": chosen, "rejected": rejected}]


@dataclass(frozen=True)
class DataFormat:
    """A row format: the columns it needs, the trainer-side shape it becomes, its check and conversion."""

    name: str
    columns: tuple[str, ...]  # required columns
    shape: str  # TRL's dataset type it becomes: text | messages | prompt_completion | preference | unpaired_preference
    check: Callable[[dict[str, Any]], list[str]]  # problems of a row that has the columns
    convert: Callable[[dict[str, Any], str], list[dict[str, Any]]]  # (valid row, target shape) -> trainer rows
    shapes: tuple[str, ...] = ()  # other shapes it converts to (preference -> unpaired_preference)


FORMATS: dict[str, DataFormat] = {f.name: f for f in (
    DataFormat("text", ("text",), "text", lambda r: _check_text(r, "text"), lambda r, s: [{"text": r["text"]}]),
    DataFormat("alpaca", ("instruction", "output"), "messages", _check_alpaca, _to_alpaca),
    DataFormat("sharegpt", ("conversations",), "messages",
               lambda r: check_messages(r["conversations"], "conversations", SHAREGPT_ROLES, "from", "value"),
               lambda r, s: [{"messages": _chat(r["conversations"], SHAREGPT_ROLES)}]),
    DataFormat("messages", ("messages",), "messages", lambda r: check_messages(r["messages"], "messages"),
               lambda r, s: [{"messages": _chat(r["messages"])}]),
    DataFormat("prompt_completion", ("prompt", "completion"), "prompt_completion", _check_prompt_completion,
               lambda r, s: [{"prompt": r["prompt"], "completion": r["completion"]}]),
    # `prompt` is optional: implicit in the shared start of chosen and rejected.
    DataFormat("preference", ("chosen", "rejected"), "preference", _check_preference, _to_preference,
               shapes=("unpaired_preference",)),
    DataFormat("unpaired_preference", ("prompt", "completion", "label"), "unpaired_preference", _check_unpaired,
               lambda r, s: [{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"]}]),
    # Prompts for sampling (RL, on-policy data), with the reference answer a verifier checks when there is one.
    DataFormat("prompt", ("prompt",), "prompt", _check_prompt_only, _to_prompt_only),
)}
# Checked in this order when guessing what a row with the wrong columns really is.
_GUESS_ORDER = ("sharegpt", "messages", "alpaca", "preference", "unpaired_preference", "prompt_completion", "text",
                "prompt")


def guess_format(row: dict[str, Any]) -> str | None:
    """The format a row's columns look like, for a hint when they match the declared one poorly."""
    return next((name for name in _GUESS_ORDER if set(FORMATS[name].columns) <= set(row)), None)


def check_row(row: Any, fmt: str) -> list[str]:
    """Why this row cannot be trained on as `fmt`; empty when it is fine."""
    if not isinstance(row, dict):
        return [f"expected an object with the {fmt} columns, got {_kind(row)}"]
    missing = [c for c in FORMATS[fmt].columns if row.get(c) is None]
    if missing:
        has = ", ".join(map(str, row)) or "nothing"
        guess = guess_format(row)
        hint = f"; this looks like {guess} data (format: {guess})" if guess and guess != fmt else ""
        plural = "s" * (len(missing) > 1)
        return [f"missing column{plural} {', '.join(repr(c) for c in missing)} (row has: {has}){hint}"]
    return FORMATS[fmt].check(row)


def target_shape(fmt: str, accepted: tuple[str, ...]) -> str:
    """The trainer shape `fmt` rows take for a stage that accepts `accepted` shapes (its registry entry)."""
    record = FORMATS[fmt]
    if accepted and record.shape not in accepted:
        return next((s for s in record.shapes if s in accepted), record.shape)
    return record.shape


def to_trainer_rows(row: dict[str, Any], fmt: str, shape: str) -> list[dict[str, Any]]:
    """A valid row (see `check_row`) as the trainer's columns; preference -> unpaired gives two rows."""
    return FORMATS[fmt].convert(row, shape)

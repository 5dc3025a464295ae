"""TRL's (and peft's) config fields per class, read from trl_fields.json so that planning never imports
TRL (~6 s).

Per field the file records what the libraries themselves say about its domain:
- `type`: the annotation, as a string;
- `choices` (or `item_choices` for a list): the allowed values, from the field's metadata
  `choices`, from an Enum or Literal annotation (OptimizerNames, SchedulerType, IntervalStrategy,
  peft's `bias`...), or, failing both, from the backquoted values of the help text's "Possible
  values are ..." sentence (DPO's `loss_type` list, `f_divergence_type`);
- `default`: the default value, for rules that combine fields (`eval_strategy` with `eval_steps`).
Ranges and rules the classes do not declare are kept by hand beside their checks
(workflows/planning/trainer.py), each tested against the real classes.

Regenerate the file from the installed libraries with `python -m posttrain.trl_fields`; the TRL
classes are those the stage registry names (posttrain/registry.py), plus peft's LoraConfig.
tests/posttrain/test_trl_fields.py fails when the file and the installed libraries disagree.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import sys
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

from posttrain.registry import STAGE_TYPES

FIELDS_FILE = Path(__file__).with_name("trl_fields.json")
PEFT_CLASSES = ("LoraConfig",)  # the `peft` group's fields are LoraConfig's
_POSSIBLE = re.compile(r"(?:[Pp]ossible values are|[Mm]ust be one of):?\s*(.*?)(?:\.\s|\.$|$)", re.S)


@cache
def trl_fields() -> dict:
    """{'trl_version', 'peft_version', 'classes': {class: {field: {'type', 'choices'?, 'item_choices'?,
    'default'?}}}}."""
    return json.loads(FIELDS_FILE.read_text())


def _type_name(tp: object) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def _members(tp: Any) -> list[Any] | None:
    """The values an Enum or Literal annotation allows, else None."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [m.value for m in tp]
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    return None


def _annotation_choices(tp: Any) -> tuple[list[Any] | None, list[Any] | None]:
    """(choices, item_choices) a string value (or a list's items) must be among: `OptimizerNames | str`
    -> the enum's values (TRL takes them as strings), `Literal['none', 'all']`, `list[DebugOption]`.
    A plain `str` beside a Literal (or alone) allows any string: no choices."""
    options = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        typing.Union, types.UnionType) else [tp]
    has_enum = any(isinstance(o, type) and issubclass(o, enum.Enum) for o in options)
    choices: list[Any] = []
    items: list[Any] = []
    free = False
    for option in options:
        members = _members(option)
        args = typing.get_args(option)
        if members is not None:
            choices += members
        elif typing.get_origin(option) is list and args and _members(args[0]) is not None:
            items += _members(args[0]) or []
        elif option is str or option is Any:
            free = free or not has_enum  # `SomeEnum | str` means the enum's values, as strings
    return (None if free else [c for c in choices if isinstance(c, str)] or None), items or None


def _help_choices(help_text: str) -> list[str] | None:
    """Backquoted values of "Possible values are `'a'`, `'b'` ..." in a field's help."""
    match = _POSSIBLE.search(help_text or "")
    if not match:
        return None
    values = [v.strip("'\"") for v in re.findall(r"`([^`]+)`", match.group(1))]
    return values or None


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    json.dumps(value)  # raises TypeError for what a YAML value cannot be
    return value


def _field_record(f: dataclasses.Field, hints: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"type": _type_name(f.type)}
    tp = hints.get(f.name, f.type)
    choices, items = _annotation_choices(tp)
    if f.metadata.get("choices"):
        choices = list(f.metadata["choices"])
    if not choices and not items and (found := _help_choices(f.metadata.get("help", ""))):
        if typing.get_origin(tp) is list or "list[" in record["type"]:
            items = found
        else:
            choices = found
    if choices:
        record["choices"] = list(dict.fromkeys(choices))
    if items:
        record["item_choices"] = list(dict.fromkeys(items))
    try:
        if f.default is not dataclasses.MISSING:
            record["default"] = _jsonable(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            record["default"] = _jsonable(f.default_factory())
    except (TypeError, ValueError):
        pass  # an object default (a callable, a class): no rule reads it
    return record


def _class_record(cls: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: fall back to the raw ones
        hints = {}
    return {f.name: _field_record(f, hints) for f in dataclasses.fields(cls)}


def collect() -> dict:
    """The same record, from the installed TRL and peft (imports them)."""
    import peft
    import trl  # only here: regenerating the file is the one time TRL is imported

    classes = sorted({t.trl_config for t in STAGE_TYPES.values() if t.trl_config})
    out: dict = {"trl_version": trl.__version__, "peft_version": peft.__version__, "classes": {}}
    for name in classes:
        out["classes"][name] = _class_record(getattr(trl, name))
    for name in PEFT_CLASSES:
        out["classes"][name] = _class_record(getattr(peft, name))
    return json.loads(json.dumps(out))  # as read back from the file (tuples become lists)


def main() -> int:
    FIELDS_FILE.write_text(json.dumps(collect(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIELDS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TRL's config fields per class, read from trl_fields.json so that planning never imports TRL (~6 s).

Regenerate the file from the installed TRL with `python -m posttrain.trl_fields`; the classes are
those the stage registry names (posttrain/registry.py). tests/posttrain/test_trl_fields.py fails
when the file and the installed TRL disagree.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from functools import cache
from pathlib import Path

from posttrain.registry import STAGE_TYPES

FIELDS_FILE = Path(__file__).with_name("trl_fields.json")


@cache
def trl_fields() -> dict:
    """{'trl_version': ..., 'classes': {config class: {field: annotation string}}}."""
    return json.loads(FIELDS_FILE.read_text())


def _type_name(tp: object) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def collect() -> dict:
    """The same record, from the installed TRL (imports it)."""
    import trl  # only here: regenerating the file is the one time TRL is imported

    classes = sorted({t.trl_config for t in STAGE_TYPES.values() if t.trl_config})
    out: dict = {"trl_version": trl.__version__, "classes": {}}
    for name in classes:
        cls = getattr(trl, name)
        out["classes"][name] = {f.name: _type_name(f.type) for f in dataclasses.fields(cls)}
    return out


def main() -> int:
    FIELDS_FILE.write_text(json.dumps(collect(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIELDS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

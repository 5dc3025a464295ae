"""Regenerate workflows/trl_fields.json from the installed TRL: `python -m workflows.gen_trl_fields`.

The planner validates `stages.<name>.trainer` keys and value types against this file, so the
orchestrator never imports TRL. tests/test_registry.py fails when the file and TRL disagree.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from workflows.registry import STAGE_TYPES, TRL_FIELDS_FILE


def _type_name(tp: object) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def collect() -> dict:
    import trl

    classes = sorted({t.trl_config for t in STAGE_TYPES.values() if t.trl_config})
    out: dict = {"trl_version": trl.__version__, "classes": {}}
    for name in classes:
        cls = getattr(trl, name)
        out["classes"][name] = {f.name: _type_name(f.type) for f in dataclasses.fields(cls)}
    return out


def main() -> int:
    TRL_FIELDS_FILE.write_text(json.dumps(collect(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TRL_FIELDS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

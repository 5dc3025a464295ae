"""Print the requirement lines of pyproject.toml's [project] table, one per line.

The Dockerfile installs these *before* it copies the source tree, so that editing Python code
does not invalidate the (multi-gigabyte) dependency layers:

    python docker/pyproject_requirements.py pyproject.toml [EXTRA[,EXTRA...]] > requirements.txt
    pip install -c constraints.txt -r requirements.txt

Standard library only (tomllib: Python >= 3.11), so it runs before anything is installed.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    if "dependencies" in project.get("dynamic", []):
        raise SystemExit(f"{pyproject}: [project].dependencies is dynamic; list them statically")
    lines = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            known = ", ".join(sorted(optional)) or "none"
            raise SystemExit(f"{pyproject}: no optional-dependencies extra {extra!r} (known: {known})")
        lines += optional[extra]
    return lines


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    extras = [e.strip() for e in argv[1].split(",") if e.strip()] if len(argv) == 2 else []
    print("\n".join(requirements(Path(argv[0]), extras)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

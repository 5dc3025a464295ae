"""Where the project's own files are: in a checkout, or inside the installed package."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent

# A non-editable install maps the top-level `conf/` and `data/` to `posttrain/_conf` and
# `posttrain/_data` (pyproject's package-dir); a checkout uses them where they are.
_INSTALLED = {"conf": PACKAGE_DIR / "_conf", "data": PACKAGE_DIR / "_data"}


def project_path(relative: str) -> Path:
    """Absolute path of a file shipped with posttrain, e.g. `data/demo/sft.jsonl`."""
    candidate = ROOT / relative
    if candidate.exists():
        return candidate
    top, _, rest = relative.partition("/")
    if top in _INSTALLED:
        installed = _INSTALLED[top] / rest
        if installed.exists():
            return installed
    return candidate  # let the caller report the missing file by its expected path


CONF_DIR = project_path("conf")

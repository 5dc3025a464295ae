"""Naming rules for what users name, and how a name is quoted where it is shown.

Stage names, the pipeline's `name` and the run names derived from them (MLflow runs, Slurm jobs,
`<run_dir>/<stage>/`) follow one rule, NAME, under every launcher: 1 to 64 letters, digits, `_`
or `-`, starting with a letter or digit. Such a name cannot leave its folder (no `/`, no `..`),
cannot start an option (`-x`), and cannot break a line of a log, a job script or an error.
Values that are not names (paths, row contents) are shown through `quoted`/`printable`, which
escape control characters, so a line break in a value can never forge a line of output.
"""

from __future__ import annotations

import re

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a POSIX environment variable name
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NAME_RULE = "1 to 64 letters, digits, '_' or '-', starting with a letter or digit"


def printable(text: str) -> str:
    """`text` with every control or invisible separator character escaped (`\\n`, `\\x1b`, `\\u2028`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def quoted(value: object) -> str:
    """A user value as messages show it: in quotes, control characters escaped."""
    return f"'{printable(str(value))}'"


def name_problem(where: str, value: object, what: str) -> str | None:
    """Why `value` cannot be the name of a `what` (stage, pipeline), or None when it can."""
    if isinstance(value, str) and NAME.match(value):
        return None
    return (f"{where}: {quoted(value)} is not a valid {what} name ({NAME_RULE}); it names folders, "
            f"tracking runs and jobs")

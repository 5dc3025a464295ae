"""Naming rules for what users name: environment variables (and, with them, every other name rule)."""

from __future__ import annotations

import re

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a POSIX environment variable name

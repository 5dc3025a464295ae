"""The store tests plan the branches pipeline on private data, with a private cache and store."""

from __future__ import annotations

from tests.workflows.state.conftest import data, own_cache  # noqa: F401  (fixtures)

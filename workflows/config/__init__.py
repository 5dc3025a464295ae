"""Composition: the Hydra schema of every config group and the `compose` entry used by tests and tools."""

from workflows.config.compose import compose, normalize_overrides, register

__all__ = ["compose", "normalize_overrides", "register"]

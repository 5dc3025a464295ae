"""posttrain's core: what the orchestrator (workflows/) and the stage processes (stages/) share.

The stage contract and the stage-dir layout, the stage-type registry, data formats and the one
data-preparation pipeline, gates, hashing and the trackers. Imports neither `workflows` nor
`stages`, and never torch, transformers or TRL at import time.
"""

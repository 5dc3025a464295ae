"""Data: formats and their conversion, sources and their rows, row checks, mixtures, token lengths,
and the one preparation pipeline the planner and the stages share (prepare.py)."""

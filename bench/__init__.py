"""Benchmarks of posttrain against the plain TRL scripts it replaces (`python -m bench.run_all`)."""

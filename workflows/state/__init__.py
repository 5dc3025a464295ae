"""What is on disk for a run_dir: stage fingerprints, why each stage runs, and the run_dir's lock."""

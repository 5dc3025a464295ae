"""What the user sees: the plan before anything runs, the summary after, pictures of the DAG."""

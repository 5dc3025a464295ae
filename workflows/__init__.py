"""posttrain's orchestrator: compose a pipeline, plan its DAG, hand the stages to a launcher.

Nothing in this package imports torch, transformers or TRL; stages do that in their own processes.
"""

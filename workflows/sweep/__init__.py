"""Sweeps: `python -m workflows.run -m +pipeline=sft_dpo stages.dpo.trainer.beta=0.05,0.2`.

Hydra's multirun makes one job per variant; each is a pipeline run of its own (variant.py): its
own run_dir (`<sweep dir>/<job number>`, unless `run_dir` is swept too), summary.json and MLflow
parent run, tagged `posttrain.sweep=<sweep id>` and `posttrain.sweep.variant=<its overrides>`.
Stages the variants share have the same fingerprint, hence the same store entry: the first variant
trains them, the others reuse them. With a scheduler and `launcher.wait=true`, every variant is
submitted first and all are followed at the end. The Hydra callback (callback.py, in
conf/config.yaml's `hydra.callbacks`) then prints one table comparing the variants' final metrics
(table.py) and writes it to `<sweep dir>/sweep.md` and `sweep.json`.
"""

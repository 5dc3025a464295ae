"""The tail every training stage shares: progress lines, train (resuming an interrupted attempt),
final metrics, save, manifest."""

from __future__ import annotations

import time
from typing import Any

from posttrain.progress import step_line
from posttrain.spec import StageSpec
from posttrain.tracking import backend
from stages.lib import progress
from stages.lib.common import last_checkpoint, log, write_manifest
from stages.lib.interrupt import save_on_signal
from stages.lib.models import save_model


def attach_progress(trainer: Any, spec: StageSpec) -> None:
    """Replace the Trainer's dict printer by one compact line per logging step,
    `[sft] step 20/300  loss 1.23  12s`, and keep progress.json and history.jsonl (stages/lib/progress.py)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.time()
            if state.is_world_process_zero:
                progress.begin(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            progress.log_step(state.global_step, state.max_steps, logs)
            elapsed = time.time() - getattr(self, "start", time.time())
            print(step_line(spec.name, state.global_step, state.max_steps, logs, elapsed), flush=True)

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Progress())


def final_metrics(trainer: Any, train_output: Any, eval_dataset: Any) -> dict[str, float]:
    """Last logged value of every training metric, plus a final evaluation when there is eval data."""
    metrics: dict[str, float] = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                metrics[key] = float(value)
    metrics.update({k: float(v) for k, v in train_output.metrics.items() if isinstance(v, (int, float))})
    if eval_dataset is not None:
        metrics.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    metrics["global_step"] = float(trainer.state.global_step)
    return metrics


def train_and_finish(trainer: Any, tokenizer: Any, spec: StageSpec, data: Any, initial_digest: str,
                     **manifest_extra: Any) -> None:
    """Run `trainer` to the end and mark the stage complete (the manifest is written last)."""
    attach_progress(trainer, spec)
    backend(spec.tracking.backend).adapt_trainer(spec, trainer)  # MLflow: curves first (tracking/mlflow/keys.py)
    save_on_signal(trainer, spec)  # SIGTERM/USR1: checkpoint now, exit, resume next run
    resume = last_checkpoint(spec)
    if resume:
        log(spec, f"resuming from {resume}")
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = {**final_metrics(trainer, output, data.evaluation), **data.metrics}
    save_model(trainer, tokenizer, spec)
    write_manifest(spec, metrics, initial_weights_digest=initial_digest, resumed_from=resume,
                   data_fingerprints=data.fingerprints, **manifest_extra)

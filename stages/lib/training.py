"""The tail every training stage shares: progress lines, train (resuming an interrupted attempt),
final metrics, save, manifest."""

from __future__ import annotations

import time
from typing import Any

from posttrain.spec import StageSpec
from stages.lib.common import last_checkpoint, log, write_manifest
from stages.lib.interrupt import save_on_signal
from stages.lib.models import save_model


def attach_progress(trainer: Any, spec: StageSpec) -> None:
    """Replace the Trainer's dict printer by one compact line per logging step:
    `[sft] step 20/300  loss 1.23  12s`."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            keys = ("loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "reward", "kl", "accuracy",
                    "eval_accuracy", "learning_rate")
            parts = [f"{k} {logs[k]:.4g}" for k in keys if isinstance(logs.get(k), (int, float))]
            elapsed = time.time() - getattr(self, "start", time.time())
            print(f"[{spec.name}] step {state.global_step}/{state.max_steps}  {'  '.join(parts)}  {elapsed:.0f}s",
                  flush=True)

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
    save_on_signal(trainer, spec)  # SIGTERM/USR1: checkpoint now, exit, resume next run
    resume = last_checkpoint(spec)
    if resume:
        log(spec, f"resuming from {resume}")
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = {**final_metrics(trainer, output, data.evaluation), **data.metrics}
    save_model(trainer, tokenizer, spec)
    write_manifest(spec, metrics, initial_weights_digest=initial_digest, resumed_from=resume,
                   data_fingerprints=data.fingerprints, **manifest_extra)

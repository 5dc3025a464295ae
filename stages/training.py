"""The tail every training stage shares: train (resuming an interrupted attempt), save, manifest."""

from __future__ import annotations

from typing import Any

from stages.common import attach_progress, final_metrics, last_checkpoint, log, save_model, write_manifest
from stages.interrupt import save_on_signal


def train_and_finish(trainer: Any, tokenizer: Any, spec: dict[str, Any], data: Any, initial_digest: str,
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

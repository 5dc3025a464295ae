"""What every stage process starts with: its spec, its rank, its log line, device defaults, TRL
configs from the spec, and the manifest it ends with.

A stage is `python -m stages.<type> <stage.yaml>`; the orchestrator writes stage.yaml from a
`posttrain.spec.StageSpec`. Heavy imports stay inside functions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from posttrain import stop
from posttrain.artifacts import Manifest, StageDir
from posttrain.gates import enforce as enforce_gate
from posttrain.spec import SpecError, StageSpec
from posttrain.tracking import backend
from stages.lib import progress
from stages.lib.distributed import adopt_srun_ranks, init_deepspeed, world_size


def load_spec(argv: list[str] | None = None) -> StageSpec:
    """Read the stage spec named on the command line; exit naming the key when it does not fit."""
    stop.exit_on_signal()  # SIGTERM/USR1 before training starts: stop now (exit code 143)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m stages.<type> <stage.yaml>  (written by `python -m workflows.run`)")
    try:
        spec = StageSpec.load(argv[0])
    except (SpecError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    done = StageDir(spec.stage_dir).read_manifest()
    if spec.fingerprint and done is not None and done.fingerprint == spec.fingerprint:
        # its store entry was finished by another run after this process was queued (a Slurm job)
        print(f"[{spec.name}] already complete in {spec.stage_dir} (another run trained it); nothing to do", flush=True)
        raise SystemExit(0)
    adopt_srun_ranks(spec)  # runner=srun: this process's rank comes from its scheduler task id
    enforce_gate(spec)  # a failed gate (posttrain/gates.py) exits here, on any launcher
    progress.start(spec)  # progress.json: `posttrain status` sees the process from here on
    backend(spec.tracking.backend).attach(spec)  # rank 0 opens the stage's tracking run, ends it truthfully
    return spec


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def log(spec: StageSpec, message: str) -> None:
    if is_main_process():
        print(f"[{spec.name}] {message}", flush=True)


def device_defaults() -> dict[str, Any]:
    """fp32 on CPU, bf16 where the GPU supports it; a user's explicit trainer values win."""
    import torch

    if not torch.cuda.is_available():
        return {"use_cpu": True, "bf16": False, "fp16": False}
    if torch.cuda.is_bf16_supported():
        return {"bf16": True, "fp16": False}
    return {"fp16": True, "bf16": False}


def trl_args(config_cls: type, spec: StageSpec, **stage_defaults: Any) -> Any:
    """Build a TRL config from the stage's `trainer` mapping (TRL's own field names).

    Precedence: posttrain-managed keys > the user's `trainer` values > stage defaults > device defaults.
    """
    stage_dir = StageDir(spec.stage_dir)
    kwargs: dict[str, Any] = {**device_defaults(), "disable_tqdm": True, "save_only_model": False}
    kwargs.update(stage_defaults)
    kwargs.update(spec.trainer)
    kwargs["output_dir"] = str(stage_dir.checkpoints)
    kwargs.setdefault("run_name", spec.name)
    kwargs.setdefault("seed", spec.seed)
    kwargs.setdefault("report_to", backend(spec.tracking.backend).report_to(spec))  # rank 0 opens its run first
    if spec.deepspeed:
        init_deepspeed(spec)  # before the config: HfDeepSpeedConfig and zero.Init read the world size
        path = stage_dir / "deepspeed.json"
        path.write_text(json.dumps(spec.deepspeed, indent=2))
        kwargs["deepspeed"] = str(path)
    return config_cls(**kwargs)


def last_checkpoint(spec: StageSpec) -> str | None:
    """The newest complete `checkpoint-N` of an interrupted run of this stage, to resume from."""
    complete = StageDir(spec.stage_dir).complete_checkpoints()
    return str(complete[-1][1]) if complete else None


def write_manifest(spec: StageSpec, metrics: dict[str, Any], **extra: Any) -> None:
    """Mark the stage complete: written last and atomically, so a folder without it is never 'done'."""
    if not is_main_process():
        return
    model_dir = Path(spec.model_dir)
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file()) if model_dir.is_dir() else []
    inputs = spec.inputs()
    inputs.setdefault("policy_init", None)
    inputs.setdefault("reference_model", None)
    inputs.setdefault("datasets", [])
    StageDir(spec.stage_dir).write_manifest(Manifest(
        name=spec.name, type=spec.type, fingerprint=spec.fingerprint, model_dir=str(model_dir), inputs=inputs,
        files=files, metrics=metrics, world_size=world_size(), extra=extra))

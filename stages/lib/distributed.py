"""Multi-process details every stage shares: ranks under srun, DeepSpeed on CPU, ZeRO-3 LoRA merges.

A stage runs as one process per device, started by torchrun, the deepspeed launcher, or a scheduler's
srun (one task per process, `resources.runner: srun`). The orchestrator never imports this.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from posttrain.spec import StageSpec


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def adopt_srun_ranks(spec: StageSpec) -> None:
    """runner=srun: srun started this process as one task of many; torch.distributed reads its rank
    from RANK/WORLD_SIZE/LOCAL_RANK, the rendezvous from MASTER_ADDR/MASTER_PORT (the job script's)."""
    if spec.resources.runner != "srun" or "SLURM_PROCID" not in os.environ:
        return
    tasks, nodes = int(os.environ.get("SLURM_NTASKS", "1")), int(os.environ.get("SLURM_NNODES", "1"))
    os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
    os.environ.setdefault("WORLD_SIZE", str(tasks))
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    os.environ.setdefault("LOCAL_WORLD_SIZE", str(tasks // max(nodes, 1)))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")


def init_deepspeed(spec: StageSpec) -> None:
    """Start DeepSpeed's process group before any model loads, when the stage uses DeepSpeed.

    ZeRO-3 partitions weights while `from_pretrained` reads them (`zero.Init`), and checks its
    batch size against the world size: both need the process group first. On GPU the Trainer's
    accelerate state starts it with NCCL; on CPU nothing would, so gloo is started here.
    """
    if not spec.deepspeed:
        return
    import torch

    if torch.cuda.is_available():
        return
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo", verbose=False)


def zero3_enabled() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def partitioned(model: Any) -> bool:
    """Whether ZeRO-3 split this model's weights across ranks (each rank sees empty placeholders)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def gathered_digest(model: Any) -> str:
    """stages.lib.models.weights_digest of a ZeRO-3 model, each weight gathered in turn so memory holds
    one full weight at a time. Collective: every rank must call it."""
    import deepspeed

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        with deepspeed.zero.GatheredParameters([param]):
            digest.update(name.encode())
            digest.update(param.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def file_backed(spec: StageSpec, args: Any, *datasets: Any) -> list[Any]:
    """In-memory datasets written once to <stage_dir>/shared_data and memory-mapped by every rank.

    TRL's reference log-prob precompute caches its result in a file named after the dataset's own
    files; an in-memory dataset has none, so each rank picks a random temporary name and the others
    never find rank 0's result. File-backed, all ranks use one file next to the data (on the shared
    filesystem every multi-node stage needs anyway). Datasets already on disk pass through.
    """
    from datasets import Dataset, load_from_disk

    root = Path(spec.stage_dir) / "shared_data"
    out = []
    with args.main_process_first(local=False, desc="sharing the datasets between ranks"):
        for i, dataset in enumerate(datasets):
            if not isinstance(dataset, Dataset) or dataset.cache_files:
                out.append(dataset)
                continue
            path = root / str(i)
            if int(os.environ.get("RANK", "0")) == 0:  # runs first; the other ranks wait, then read
                shutil.rmtree(path, ignore_errors=True)
                dataset.save_to_disk(str(path))
            out.append(load_from_disk(str(path)))
    return out

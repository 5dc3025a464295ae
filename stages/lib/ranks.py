"""What each process of a stage did: where it ran and what weights it ended with
(`<stage_dir>/ranks/rank-<r>.json`), and that it saved its part of a checkpoint.

Every rank writes its own record when training begins (rank, world size and backend of the process
group it joined, host, the scheduler's node name, pid) and completes it when training ends. With
`POSTTRAIN_RANK_DIGESTS=1` (e.g. `launcher.env={POSTTRAIN_RANK_DIGESTS: 1}`) the end record also
holds the digest of that rank's final weights (stages.lib.models.model_digest): under data
parallelism every replica must end identical, so differing digests mean gradients were not
all-reduced (like Megatron's check of parameter hashes across data-parallel replicas). Off by
default: hashing reads every weight once more, seconds per billion parameters.

A checkpoint of several processes counts as complete (posttrain/artifacts.py) once rank 0 wrote
`checkpoint-N/ranks_saved.json`, after every rank saved its files: the Trainer's own last file,
trainer_state.json, is written by rank 0 without waiting, so a rank killed in that window would
leave a checkpoint that looks complete and cannot be resumed.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from posttrain.artifacts import RANKS, RANKS_SAVED
from posttrain.jsonio import read_json, write_json
from posttrain.spec import StageSpec
from stages.lib.models import model_digest

DIGESTS_ENV = "POSTTRAIN_RANK_DIGESTS"


@dataclass
class RankRecord:
    rank: int
    world_size: int  # of the process group this rank joined (1 without one)
    local_rank: int
    host: str
    node: str | None  # the scheduler's name for the node (SLURMD_NODENAME), when a scheduler started it
    pid: int
    backend: str | None  # gloo, nccl; None without a process group
    started_at: float
    finished_at: float | None = None
    global_step: int | None = None
    weights_digest: str | None = None  # with POSTTRAIN_RANK_DIGESTS=1

    @classmethod
    def here(cls) -> RankRecord:
        import torch.distributed as dist

        joined = dist.is_available() and dist.is_initialized()
        return cls(rank=dist.get_rank() if joined else int(os.environ.get("RANK", "0")),
                   world_size=dist.get_world_size() if joined else 1,
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")), host=socket.gethostname(),
                   node=os.environ.get("SLURMD_NODENAME"), pid=os.getpid(),
                   backend=str(dist.get_backend()) if joined else None, started_at=time.time())


def record_path(stage_dir: str | Path, rank: int) -> Path:
    return Path(stage_dir) / RANKS / f"rank-{rank}.json"


def read_records(stage_dir: str | Path) -> dict[int, RankRecord]:
    """The records of the latest attempt's ranks, by rank."""
    out = {}
    for path in sorted((Path(stage_dir) / RANKS).glob("rank-*.json")):
        data = read_json(path)
        if data is not None:
            record = RankRecord(**{k: v for k, v in data.items() if k in RankRecord.__dataclass_fields__})
            out[record.rank] = record
    return out


def record_ranks(trainer: Any, spec: StageSpec) -> None:
    """Add the callback that writes this rank's record at the start and the end of training."""
    from transformers import TrainerCallback

    class RecordRank(TrainerCallback):
        record: RankRecord | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.record = RankRecord.here()
            write_json(record_path(spec.stage_dir, self.record.rank), asdict(self.record))

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if self.record is None:
                return
            if os.environ.get(DIGESTS_ENV, "") not in ("", "0") and model is not None:
                self.record.weights_digest = model_digest(model)  # collective under ZeRO-3: every rank gets here
            self.record.finished_at, self.record.global_step = time.time(), state.global_step
            write_json(record_path(spec.stage_dir, self.record.rank), asdict(self.record))

    trainer.add_callback(RecordRank())


def mark_saved_checkpoints(trainer: Any) -> None:
    """Add the callback that marks each checkpoint complete once every rank has saved its part.
    Add it before any callback that may end the process on a save (stages/lib/interrupt.py)."""
    from transformers import TrainerCallback

    class MarkSaved(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if args.world_size <= 1:
                return  # one process: trainer_state.json, written last, says it all
            trainer.accelerator.wait_for_everyone()
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                write_json(folder / RANKS_SAVED, {"world_size": args.world_size, "step": state.global_step})

    trainer.add_callback(MarkSaved())

"""Reference log-probabilities for DPO/KTO, computed once and reused across runs and stages.

With `precompute_ref_log_probs: true` TRL runs the frozen reference over the whole dataset before
training. TRL caches the result in the datasets cache under a key that covers every trainer
argument (its tokenization filter closes over them), so changing `beta` recomputes it; a second
stage with the same reference and data recomputes it too. Here the key is what decides the numbers:
- the reference weights: sha256 over their tensors (`weights_digest`, taken when the stage loads them);
- the tokenized rows TRL built (every `*_ids` column): this covers the data, its order, the
  tokenizer, the chat template and the prompt/completion split;
- what the reference forward does with them: max_length, truncation_mode, padding_free,
  pad_to_multiple_of, ld_alpha (DPO), the KL pairs (KTO), dtype and mixed precision, device type,
  trainer class and TRL version.
Entries live in <cache root>/ref_logps/<key>/ (cache root: $POSTTRAIN_CACHE_DIR, default
~/.cache/posttrain), one `datasets` folder with the reference columns, written by rank 0 and
renamed into place, so a crash never leaves a partial entry. Delete the folder to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from posttrain.hashing import cache_root
from posttrain.spec import StageSpec
from stages.lib.common import log
from stages.lib.data import store_dataset

KEY_ARGS = ("max_length", "truncation_mode", "padding_free", "pad_to_multiple_of", "ld_alpha", "bf16", "fp16")


def tokens_digest(dataset: Any) -> str:
    """sha256 over the token-id columns of a tokenized dataset, in row order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = sorted(c for c in dataset.column_names if c.endswith("_ids"))
    digest = hashlib.sha256(f"{len(dataset)} rows; {columns}".encode())
    view = dataset.select_columns(columns).with_format("arrow")
    for batch in view.iter(batch_size=65_536):
        for name in columns:
            array = batch[name]
            array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
            if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
                lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
                values = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(np.int64)
                digest.update(lengths.tobytes())
                digest.update(values.tobytes())
            else:
                digest.update(json.dumps(array.to_pylist()).encode())
    return digest.hexdigest()


def cache_key(trainer: Any, dataset: Any, reference_digest: str) -> tuple[str, dict[str, Any]]:
    """(key, what it was computed from) for the reference log-probs of `dataset` under `trainer`."""
    import trl

    args = trainer.args
    inputs = {
        "trainer": type(trainer).__name__,  # DPOTrainer / KTOTrainer: what the columns mean
        "trl": trl.__version__,
        "reference_weights": reference_digest,
        "tokens": tokens_digest(dataset),
        "settings": {k: getattr(args, k, None) for k in KEY_ARGS},
        "kl": getattr(trainer, "calculate_KL", None),
        "dtype": str(trainer.model.dtype),
        "device": args.device.type,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest(), inputs


def caching(trainer_cls: type, spec: StageSpec, reference_digest: str) -> type:
    """`trainer_cls` whose reference log-prob precompute goes through the cache.

    The trainer records what happened per dataset in `ref_logps_cache` ({"train": {"hit": ...}}),
    which the stage puts in its manifest.
    """

    class CachedReferenceLogps(trainer_cls):
        ref_logps_cache: dict[str, dict[str, Any]]

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            from accelerate.utils import broadcast_object_list
            from datasets import Dataset, concatenate_datasets, load_from_disk

            if not isinstance(dataset, Dataset):
                return super()._precompute_ref_logps(dataset, name, batch_size)
            self.ref_logps_cache = getattr(self, "ref_logps_cache", {})
            start = time.time()
            shared = [cache_key(self, dataset, reference_digest) if self.accelerator.is_main_process else None]
            broadcast_object_list(shared, from_process=0)  # one key for all ranks (ZeRO-3 shards weights)
            key, inputs = shared[0]
            entry = cache_root() / "ref_logps" / key
            if entry.is_dir():
                cached = load_from_disk(str(entry))
                if len(cached) == len(dataset):
                    seconds = round(time.time() - start, 2)
                    self.ref_logps_cache[name] = {"hit": True, "key": key, "seconds": seconds}
                    log(spec, f"reference log-probs ({name}, {len(dataset)} rows): from cache {entry} in {seconds}s")
                    return concatenate_datasets([dataset, cached], axis=1)
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            if self.accelerator.is_main_process:
                columns = out.select_columns([c for c in out.column_names if c not in dataset.column_names])
                store_dataset(columns.flatten_indices(), entry,
                              {"posttrain_key.json": json.dumps(inputs, indent=2, default=str)})
            self.accelerator.wait_for_everyone()
            seconds = round(time.time() - start, 2)
            self.ref_logps_cache[name] = {"hit": False, "key": key, "seconds": seconds}
            log(spec, f"reference log-probs ({name}, {len(dataset)} rows): computed in {seconds}s, cached in {entry}")
            return out

    CachedReferenceLogps.__name__ = trainer_cls.__name__  # TRL names model cards and tags after it
    return CachedReferenceLogps

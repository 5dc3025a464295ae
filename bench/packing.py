"""SFT throughput on skewed-length conversations: packing (TRL's BFD packing, padding-free) and
padding-free batches vs. padded batches, one epoch over the same rows through the SFT stage.

    python -m bench.packing [--quick] [--repeats 2]

The data are generated here: conversations whose lengths follow a long-tailed (log-normal)
distribution, as chat data does, so a padded batch is mostly padding. Each variant runs
`python -m workflows.run +pipeline=sft_dpo` with only the SFT stage, from the same model built
from config, for one epoch; throughput is real (non-padding) tokens trained, as TRL counts them
(`num_tokens`), over the time from the first to the last optimizer step (bench/observer). The
packed variant gets fewer, fuller rows per batch, so every variant trains about the same number
of tokens per optimizer step. Target: packed / padded tokens per second >= 1.5.
"""

from __future__ import annotations

import json
import math
import random
import string
from pathlib import Path
from typing import Any

from bench.common import (
    Bench, build_checkpoint, disable, headline, median, parameters, parse, pipeline, progress, ratio, run,
    stage_observations,
)

TOKENIZER = Path(__file__).resolve().parents[1] / "demo" / "tiny_tokenizer" / "tokenizer.json"
TEMPLATE_TOKENS = 6  # bos, role tags and end-of-turn markers the chat template adds around two turns

FULL = {"rows": 640, "max_length": 256, "batch": 16, "median_tokens": 40, "sigma": 0.9,
        "model": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
                  "num_key_value_heads": 4, "max_position_embeddings": 512}}
QUICK = {"rows": 48, "max_length": 128, "batch": 8, "median_tokens": 24, "sigma": 0.9,
         "model": {"max_position_embeddings": 256}}


def skewed_conversations(path: Path, rows: int, max_length: int, median_tokens: int, sigma: float,
                         seed: int = 0) -> list[int]:
    """Write `rows` chat rows of log-normal token lengths to `path`; returns their token counts."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    rng = random.Random(seed)

    def words(n_tokens: int) -> str:
        text = ""
        while len(tokenizer.encode(text).ids) < n_tokens:
            text += ("" if not text else " ") + "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 7)))
        return text

    lengths = []
    with path.open("w") as f:
        for _ in range(rows):
            total = int(min(max_length - 8, max(8, rng.lognormvariate(math.log(median_tokens), sigma))))
            prompt = words(max(2, total // 4))
            answer = words(max(2, total - len(tokenizer.encode(prompt).ids) - TEMPLATE_TOKENS))
            f.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": answer}]}) + "\n")
            lengths.append(len(tokenizer.encode(prompt).ids) + len(tokenizer.encode(answer).ids) + TEMPLATE_TOKENS)
    return lengths


def variants(size: dict[str, Any], mean_tokens: float) -> dict[str, list[str]]:
    """Trainer overrides per variant; packed rows are full, so fewer of them make the same tokens per step."""
    packs = max(1, round(size["batch"] * mean_tokens / size["max_length"]))
    return {
        "padded": ["packing=false", f"per_device_train_batch_size={size['batch']}"],
        "packing (bfd, padding-free)": ["packing=true", f"per_device_train_batch_size={packs}"],
        # TRL refuses padding_free without packing unless max_length is unset; the rows all fit anyway
        "padding-free, no packing": ["packing=false", "padding_free=true", "max_length=null",
                                     f"per_device_train_batch_size={size['batch']}"],
    }


def run_variant(bench: Bench, model_dir: Path, data: Path, size: dict[str, Any], settings: list[str],
                tag: str) -> dict[str, float]:
    run_dir, observe = bench.workdir / tag, bench.workdir / f"{tag}-observe"
    trainer = ["max_steps=-1", "num_train_epochs=1", f"max_length={size['max_length']}", "logging_steps=1",
               "save_strategy=no", "warmup_steps=0", *settings]
    overrides = ["+pipeline=sft_dpo", "tracking=none", f"run_dir={run_dir}", "model=hf",
                 f"model.name_or_path={model_dir}", *disable("sft_dpo", "dpo", "eval", "kto"),
                 f"stages.sft.data.sources=[{{path:'{data}'}}]", "stages.sft.data.eval_sources=[]",
                 *(f"stages.sft.trainer.{kv}" for kv in trainer)]
    run(pipeline(*overrides), env=bench.env(observe=observe))
    (observation,) = stage_observations(observe, "sft")
    tokens = max(log.get("num_tokens", 0) for log in observation["logs"])
    seconds = observation["steps"][-1]["t"] - observation["train_begin_s"]
    cpu_seconds = observation["steps"][-1]["cpu"] - observation["train_begin_cpu_s"]
    steps = len(observation["steps"])
    return {"tokens": tokens, "seconds": seconds, "steps": steps, "tokens_per_s": tokens / seconds,
            "tokens_per_cpu_s": tokens / cpu_seconds,
            "tokens_per_step": tokens / steps, "peak_rss_mb": observation["maxrss_mb_exit"]}


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("packing", __doc__.splitlines()[0], argv, repeats=2)
    size = QUICK if bench.quick else FULL
    data = bench.workdir / "skewed.jsonl"
    lengths = skewed_conversations(data, size["rows"], size["max_length"], size["median_tokens"], size["sigma"])
    mean_tokens = sum(lengths) / len(lengths)
    model_dir = build_checkpoint(bench, size["model"])
    settings = variants(size, mean_tokens)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
    for i in range(bench.repeats):  # A B C A B C ...
        for j, (name, overrides) in enumerate(settings.items()):
            with progress(f"repeat {i + 1}/{bench.repeats}: {name}"):
                results[name].append(run_variant(bench, model_dir, data, size, overrides, f"v{j}-{i}"))
    speed = {name: [r["tokens_per_s"] for r in rs] for name, rs in results.items()}
    cpu_speed = {name: [r["tokens_per_cpu_s"] for r in rs] for name, rs in results.items()}
    rows = [{"variant": name, "tokens_per_s": median(speed[name]), "vs_padded": ratio(speed[name], speed["padded"]),
             "tokens_per_cpu_s": median(cpu_speed[name]), "cpu_vs_padded": ratio(cpu_speed[name], cpu_speed["padded"]),
             "steps": rs[0]["steps"], "tokens_per_step": rs[0]["tokens_per_step"], "real_tokens": rs[0]["tokens"],
             "peak_rss_mb": median([r["peak_rss_mb"] for r in rs]), "runs_tokens_per_s": [round(s) for s in speed[name]]}
            for name, rs in results.items()]
    sorted_lengths = sorted(lengths)
    data_stats = {"rows": len(lengths), "mean_tokens": mean_tokens, "median_tokens": median(lengths),
                  "p95_tokens": sorted_lengths[int(0.95 * (len(lengths) - 1))], "max_tokens": max(lengths),
                  "max_length": size["max_length"], "model_parameters": parameters(model_dir)}
    print(f"\ndata: {json.dumps(data_stats)}")
    bench.finish(rows, [
        headline("packing / padded tokens per second", ratio(speed["packing (bfd, padding-free)"], speed["padded"]),
                 ">=", 1.5),
        headline("padding-free / padded tokens per second", ratio(speed["padding-free, no packing"], speed["padded"]),
                 ">=", 1.5),
    ], results=results, data=data_stats, model=size["model"], settings=settings)


if __name__ == "__main__":
    main()

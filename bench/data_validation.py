"""How long plan-time data validation takes on a 100k-row JSONL file: `python bench/data_validation.py`.

Generates the files in a temp dir (chat SFT rows and conversational preference pairs, ~1% broken
rows, 1% long ones; max_length 128, 512 for the tiny tokenizer), tokenized with a byte-level BPE trained on the fly (the
demo's tiny tokenizer splits almost every character, so it is slow: timed too), then times:
  plan (cold)      the planner's hook, empty cache: every row parsed and checked, token lengths
                   of a 10k-row sample (workflows/planning/data.py PLAN_LENGTH_SAMPLE)
  plan (cached)    the same plan again: the file is hashed, the cached result read
  rows only        the full pass without a tokenizer (parsing + row checks + duplicates)
  stage (all)      what the stage process does before training: every row, every length
Prints a table and writes bench/results/data_validation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENIZER = ROOT / "demo" / "tiny_tokenizer"
WORDS = "the of and to in is that for it as with was on be by this are from or have an not".split()


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def chat_row(rng: random.Random, i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}: {sentence(rng, 5, 40)}"},
                         {"role": "assistant", "content": sentence(rng, 5, 60)}]}


def pair_row(rng: random.Random, i: int) -> dict:
    prompt = [{"role": "user", "content": f"question {i}: {sentence(rng, 5, 40)}"}]
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": sentence(rng, 3, 40)}],
            "rejected": [{"role": "assistant", "content": f"no {sentence(rng, 3, 40)}"}]}


def bpe_tokenizer(folder: Path, texts: list[str]) -> Path:
    """A byte-level BPE tokenizer (GPT-2-style pre-tokenizer, 8k vocab) trained on the bench text,
    with the tiny tokenizer's special tokens, config and chat template: realistic tokenization speed."""
    import shutil

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER / name, folder / name)
    config = json.loads((TOKENIZER / "tokenizer_config.json").read_text())
    specials = ["<|pad|>", "<|bos|>", "<|end|>", *config.get("extra_special_tokens", [])]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8000, special_tokens=specials,
                                                             show_progress=False))
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def write(path: Path, make, rows: int, seed: int) -> dict:
    """`rows` rows, about 1% of them broken (empty answer, unknown role, duplicate, bad JSON) and 1%
    ten times longer than the others."""
    rng = random.Random(seed)
    broken = 0
    with open(path, "w") as f:
        previous = None
        for i in range(rows):
            row = make(rng, i)
            kind = rng.random()
            if kind > 0.99:
                key = "messages" if "messages" in row else "chosen"
                row[key][-1]["content"] = " ".join([row[key][-1]["content"]] * 10)
            if kind < 0.0025:
                key = "messages" if "messages" in row else "chosen"
                row[key][-1]["content"] = ""
            elif kind < 0.005:
                key = "messages" if "messages" in row else "prompt"
                row[key][0]["role"] = "human"
            elif kind < 0.0075 and previous is not None:
                row = previous
            elif kind < 0.01:
                f.write('{"broken": \n')
                broken += 1
                continue
            broken += kind < 0.01
            previous = row
            f.write(json.dumps(row) + "\n")
    return {"rows": rows, "broken_rows": broken, "bytes": path.stat().st_size}


def spec_for(name: str, stage_type: str, fmt: str, path: Path, max_length: int):
    """A stage that trains from the pipeline's checkpoint (so the planner uses `model.tokenizer`)."""
    from posttrain.spec import StageSpec

    return StageSpec.from_dict({
        "name": name, "type": stage_type, "stage_dir": str(path.parent / name),
        "model_dir": str(path.parent / name / "model"), "seed": 0, "chat_template": None,
        "policy": {"ref": "checkpoint", "path": str(path.parent / "checkpoint" / "model"), "stage": "checkpoint"},
        "trainer": {"max_length": max_length, "assistant_only_loss": stage_type == "sft"},
        "data": {"format": fmt, "sources": [{"path": str(path)}], "eval_sources": [], "seed": 0,
                 "on_invalid": "drop", "shuffle": True}})


CPU: dict[str, float] = {}  # process CPU seconds of the last timed call (the machine may be shared)


def timed(fn) -> tuple[float, object]:
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    CPU["last"] = time.process_time() - cpu
    return time.perf_counter() - start, out


def bench(path: Path, stage_type: str, fmt: str, max_length: int, cache: Path, tokenizer: Path) -> dict:
    from posttrain.data.check import Settings, check_source
    from posttrain.data.files import iter_rows
    from posttrain.data.tokens import TokenCounter
    from posttrain.registry import STAGE_TYPES
    from workflows.planning import data as plan_data
    from workflows.planning.data import check_pipeline_data

    spec = spec_for(stage_type, stage_type, fmt, path, max_length)
    model = {"tokenizer": str(tokenizer)}  # the pipeline's `model` group
    os.environ["POSTTRAIN_CACHE_DIR"] = str(cache)
    plan_data._COUNTERS.clear()
    cpu = {}
    cold, (problems, notes) = timed(lambda: check_pipeline_data({spec.name: spec}, model))
    cpu["plan_cold"] = round(CPU["last"], 2)
    cached, _ = timed(lambda: check_pipeline_data({spec.name: spec}, model))
    cpu["plan_cached"] = round(CPU["last"], 3)
    settings = Settings.from_spec(spec, STAGE_TYPES[stage_type].trl_config, STAGE_TYPES[stage_type].shapes)
    rows_only, _ = timed(lambda: check_source(iter_rows(path), path.name, fmt, settings, None))
    cpu["rows_only"] = round(CPU["last"], 2)
    counter = TokenCounter.from_dir(tokenizer)
    stage, checked = timed(lambda: check_source(iter_rows(path), path.name, fmt, settings, counter, keep=True))
    cpu["stage_all_rows"] = round(CPU["last"], 2)
    return {"plan_cold_s": round(cold, 2), "plan_cached_s": round(cached, 3), "rows_only_s": round(rows_only, 2),
            "stage_all_rows_s": round(stage, 2), "invalid_rows": len(checked.bad),
            "over_length_rows": checked.over_length, "problems": len(problems), "notes": notes[spec.name][:2],
            "cpu_s": cpu}


def import_cost() -> float:
    """Seconds `import workflows.planning.data` plus tokenizers and jinja2 add to a bare interpreter."""
    def run(code: str) -> float:
        best = min(timed(lambda: subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True))[0]
                   for _ in range(3))
        return best
    return round(run("import workflows.planning.data, tokenizers, jinja2.sandbox") - run("pass"), 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "data_validation.json"))
    args = parser.parse_args(argv)
    results = {"rows": args.rows, "cpus": os.cpu_count(), "python": sys.version.split()[0], "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        rng = random.Random(1)
        bpe = bpe_tokenizer(Path(tmp) / "bpe", [sentence(rng, 5, 60) for _ in range(20_000)])
        cases = [("sft_messages", "sft", "messages", chat_row, bpe, 128),
                 ("dpo_pairs", "dpo", "preference", pair_row, bpe, 128),
                 ("sft_tiny_tok", "sft", "messages", chat_row, TOKENIZER, 512)]
        for name, stage_type, fmt, make, tokenizer, max_length in cases:
            path = Path(tmp) / f"{name}.jsonl"
            info = write(path, make, args.rows, seed=0)
            results["cases"][name] = {**info, "tokenizer": "demo/tiny_tokenizer" if tokenizer == TOKENIZER else
                                      "byte-level BPE, 8k", **bench(path, stage_type, fmt, max_length, Path(tmp) / "cache",
                                                                     tokenizer)}
    results["import_s"] = import_cost()
    header = f"{'case':<14}{'rows':>9}{'MB':>7}{'plan cold':>11}{'cached':>9}{'rows only':>11}{'stage all':>11}{'invalid':>9}"
    print(header)
    for name, r in results["cases"].items():
        print(f"{name:<14}{r['rows']:>9,}{r['bytes'] / 1e6:>7.1f}{r['plan_cold_s']:>10.2f}s{r['plan_cached_s']:>8.3f}s"
              f"{r['rows_only_s']:>10.2f}s{r['stage_all_rows_s']:>10.2f}s{r['invalid_rows']:>9,}")
    print("CPU seconds (wall clock above is inflated when the machine is shared):")
    for name, r in results["cases"].items():
        print(f"  {name:<14}" + "  ".join(f"{k} {v}" for k, v in r["cpu_s"].items()))
    imports = "import workflows.planning.data + tokenizers + jinja2"
    print(f"{imports}: {results['import_s']:.3f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"Written to {args.out}")


if __name__ == "__main__":
    main()

"""Write the demo data files (data/demo/): `python -m demo.data --out data/demo --seed 0`.

The rows come from demo/tasks.py (`build`); the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import random

from demo.tasks import TASKS, build

README = """# Demo data (generated)

Tiny instruction tasks whose answers a program checks (`demo/tasks.py`).  Regenerate, byte-identical:

    python -m demo.data --out data/demo --seed {seed}

Prompts look like `reverse: abcd`; the first word names the task.

| file | rows | format |
|---|---|---|
| `sft.jsonl`, `sft_eval.jsonl` | {sft}, {sft_eval} | `{{"messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}], "task"}}` |
| `prefs.jsonl`, `prefs_eval.jsonl` | {prefs}, {prefs_eval} | `{{"prompt": [user], "chosen": [assistant], "rejected": [assistant], "task"}}` (rejected = near miss) |
| `kto.jsonl`, `kto_eval.jsonl` | {kto}, {kto_eval} | `{{"prompt": [user], "completion": [assistant], "label": bool, "task"}}` (balanced labels) |
| `heldout.jsonl` | {heldout} | `{{"prompt": [user], "answer": str, "task": str, "seen": bool}}` |

{tasks}
Seen tasks appear in every file; unseen tasks only in `heldout.jsonl` (zero-shot transfer).  `rejected` /
undesirable answers are near misses shaped like the demo model's real errors (one slipped letter, a sorted
string with one digit off, a number off by one or ten); they never pass the checker.

Every prompt is unique across all files, so training, eval and held-out prompts never overlap.
Score a model output with `demo.tasks.check(task, prompt, answer, output)`.
"""


def write(out_dir: str, seed: int = 0) -> dict[str, int]:
    data = build(seed)
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for split, rows in data.items():
        path = os.path.join(out_dir, f"{split}.jsonl")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
        counts[split] = len(rows)
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8", newline="\n") as f:
        tasks = "\n".join(["| task | seen | example | answer |", "|---|---|---|---|"] + [
            "| `{}` | {} | `{}` | `{}` |".format(n, "yes" if t.seen else "no", *t.make(random.Random(n)))
            for n, t in TASKS.items()]) + "\n"
        f.write(README.format(seed=seed, tasks=tasks, **counts))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/demo")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    counts = write(args.out, args.seed)
    print(json.dumps({"out": args.out, "seed": args.seed, "rows": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

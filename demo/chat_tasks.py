"""Checkable instruction tasks in plain English, for a real pretrained model with a BPE tokenizer.

STDLIB ONLY. The tiny demo's tasks (demo/tasks.py: `reverse: abcd`) are character-level string
games sized for a 0.5M-parameter model with its own tokenizer; a real model like SmolLM2 splits
such strings into arbitrary BPE pieces. These tasks use whole words and numbers instead, asked in
sentences, so what a pretrained model knows (numbers, words, the alphabet) is usable:

    What is 23 + 45? Reply with the number only.            -> 68
    Write 'green river' in capital letters.                 -> GREEN RIVER

*Seen* task types appear in the training files; *unseen* ones only in `heldout.jsonl`. Each unseen
type is the mirror of a seen one (subtract / add, smaller / larger, before / after, last / first
word, lowercase / uppercase), so the held-out split measures zero-shot transfer to instructions
never trained on. Every split is generated from the seed (`random.Random(f"{seed}/{split}")`), the
held-out split first, and no prompt appears in two files; nothing is hand-picked.

    python -m demo.chat_tasks --out data/chat_tasks --seed 0      # byte-identical for a seed
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

WORDS = (
    "apple", "river", "stone", "green", "table", "cloud", "horse", "bread", "light", "music", "paper", "water",
    "chair", "plant", "smile", "train", "dream", "honey", "ocean", "tiger", "lemon", "grass", "sugar", "glass",
    "night", "heart", "money", "storm", "clock", "bird", "fish", "tree", "book", "door", "moon", "star", "rain",
    "snow", "fire", "wind", "road", "ship", "king", "milk", "salt", "gold", "bell", "coat", "lamp", "rock",
    "sand", "wolf", "bear", "duck", "frog", "corn", "rice", "cake", "ring", "drum", "kite", "nest", "leaf",
    "seed", "wall", "roof", "hill", "lake", "farm", "city", "shoe", "sock", "hand", "foot", "nose", "face",
    "song", "game", "blue", "red", "happy", "quiet", "brave", "small", "large", "sweet", "cold", "warm",
    "fast", "slow", "dark", "soft", "loud", "bright", "orange", "yellow", "silver", "garden", "window",
    "pencil", "rabbit", "monkey", "castle", "forest", "island", "bridge", "candle", "button", "basket",
    "pocket", "summer", "winter", "spring", "autumn", "friend", "doctor", "farmer", "market", "rocket",
)
NUMBER_ONLY = "Reply with the number only."
WORD_ONLY = "Reply with the word only."


def norm(text: str) -> str:
    """Whitespace collapsed; surrounding quotes and a final full stop dropped (`'68.'` reads as `68`). Case kept."""
    return " ".join(str(text).split()).strip("'\"`").removesuffix(".").strip()


def _near_number(rng: random.Random, answer: str) -> str:
    n = int(answer)
    return str(n + rng.choice([d for d in (-2, -1, 1, 2, 10, -10) if n + d >= 0]))


def _words(rng: random.Random, lo: int, hi: int) -> list[str]:
    return rng.sample(WORDS, rng.randint(lo, hi))


@dataclass(frozen=True)
class Task:
    name: str
    seen: bool
    make: Callable[[random.Random], tuple[str, str, str]]  # rng -> (prompt, answer, near-miss wrong answer)


def _add(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(1, 60), rng.randint(1, 39)
    return f"What is {a} + {b}? {NUMBER_ONLY}", str(a + b), _near_number(rng, str(a + b))


def _subtract(rng: random.Random) -> tuple[str, str, str]:
    a = rng.randint(10, 99)
    b = rng.randint(1, a - 1)
    return f"What is {a} - {b}? {NUMBER_ONLY}", str(a - b), _near_number(rng, str(a - b))


def _compare(larger: bool) -> Callable[[random.Random], tuple[str, str, str]]:
    def make(rng: random.Random) -> tuple[str, str, str]:
        a, b = rng.sample(range(1, 100), 2)
        pick, other = (max(a, b), min(a, b)) if larger else (min(a, b), max(a, b))
        return f"Which number is {'larger' if larger else 'smaller'}, {a} or {b}? {NUMBER_ONLY}", str(pick), str(other)
    return make


def _neighbour(after: bool) -> Callable[[random.Random], tuple[str, str, str]]:
    def make(rng: random.Random) -> tuple[str, str, str]:
        n = rng.randint(2, 998)
        answer = n + 1 if after else n - 1
        wrong = n - 1 if after else n + 1
        return f"What number comes right {'after' if after else 'before'} {n}? {NUMBER_ONLY}", str(answer), str(wrong)
    return make


def _end_word(first: bool) -> Callable[[random.Random], tuple[str, str, str]]:
    def make(rng: random.Random) -> tuple[str, str, str]:
        words = _words(rng, 3, 5)
        answer, wrong = (words[0], words[-1]) if first else (words[-1], words[0])
        return f"What is the {'first' if first else 'last'} word of this list: {' '.join(words)}? {WORD_ONLY}", \
            answer, wrong
    return make


def _case(upper: bool) -> Callable[[random.Random], tuple[str, str, str]]:
    def make(rng: random.Random) -> tuple[str, str, str]:
        word = " ".join(_words(rng, 1, 2))
        shown = word if upper else word.upper()
        answer = word.upper() if upper else word
        wrong = shown if rng.random() < 0.5 else answer.capitalize()
        return f"Write '{shown}' in {'capital' if upper else 'lowercase'} letters.", answer, wrong
    return make


def _count(rng: random.Random) -> tuple[str, str, str]:
    words = _words(rng, 2, 6)
    return (f"How many words are in this list: {', '.join(words)}? {NUMBER_ONLY}", str(len(words)),
            str(len(words) + rng.choice((-1, 1))))


def _parity(rng: random.Random) -> tuple[str, str, str]:
    n = rng.randint(1, 999)
    answer = "even" if n % 2 == 0 else "odd"
    return f"Is {n} even or odd? Reply with one word.", answer, "odd" if answer == "even" else "even"


def _alphabetical(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.sample(WORDS, 2)
    while a[0] == b[0]:
        a, b = rng.sample(WORDS, 2)
    return f"Which word comes first in alphabetical order, {a} or {b}? {WORD_ONLY}", min(a, b), max(a, b)


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("add", True, _add), Task("larger", True, _compare(True)), Task("after", True, _neighbour(True)),
    Task("first_word", True, _end_word(True)), Task("uppercase", True, _case(True)), Task("count", True, _count),
    Task("parity", True, _parity), Task("alphabetical", True, _alphabetical),
    # unseen: mirrors of seen types, held out only
    Task("subtract", False, _subtract), Task("smaller", False, _compare(False)),
    Task("before", False, _neighbour(False)), Task("last_word", False, _end_word(False)),
    Task("lowercase", False, _case(False)),
)}
SEEN_TASKS = tuple(n for n, t in TASKS.items() if t.seen)
# Rows per seen task type in each file (unseen types get held-out rows only).
SIZES = {"heldout": 20, "sft_eval": 8, "prefs_eval": 8, "sft": 200, "prefs": 120}


def check(task: str | None, prompt: str, answer: str, output: str) -> bool:
    """The verifier: `output` equals the reference answer after `norm` (case-sensitive)."""
    return norm(output) == norm(answer)


def build(seed: int = 0) -> dict[str, list[dict]]:
    """Every split, held-out first; a prompt never appears in two splits (or twice in one)."""
    used: set[str] = set()
    out: dict[str, list[dict]] = {}
    for split, per_task in SIZES.items():
        rng = random.Random(f"{seed}/{split}")
        rows = []
        for name in TASKS if split == "heldout" else SEEN_TASKS:
            made = 0
            for _ in range(100 * per_task):
                if made == per_task:
                    break
                prompt, answer, wrong = TASKS[name].make(rng)
                if prompt in used:
                    continue
                used.add(prompt)
                made += 1
                user, good = [{"role": "user", "content": prompt}], [{"role": "assistant", "content": answer}]
                if split == "heldout":
                    rows.append({"prompt": user, "answer": answer, "task": name, "seen": TASKS[name].seen})
                elif split.startswith("sft"):
                    rows.append({"messages": user + good, "task": name})
                else:
                    rows.append({"prompt": user, "chosen": good, "rejected": [{"role": "assistant", "content": wrong}],
                                 "task": name})
            if made < per_task:
                raise RuntimeError(f"task {name!r}: only {made} distinct prompts for {split}")
        rng.shuffle(rows)
        out[split] = rows
    return out


def write(out_dir: str, seed: int = 0) -> dict[str, int]:
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for split, rows in build(seed).items():
        with open(os.path.join(out_dir, f"{split}.jsonl"), "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        counts[split] = len(rows)
    examples = "\n".join(f"| `{n}` | {'yes' if t.seen else 'no'} | {t.make(random.Random(n))[0]} | "
                         f"`{t.make(random.Random(n))[1]}` |" for n, t in TASKS.items())
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(f"# Chat tasks (generated)\n\nPlain-English instruction tasks for a real pretrained model "
                f"(`demo/chat_tasks.py`). Regenerate, byte-identical:\n\n    python -m demo.chat_tasks --out "
                f"data/chat_tasks --seed {seed}\n\nRows: {json.dumps(counts)}. Formats as in `data/demo/` (sft: "
                f"messages; prefs: prompt/chosen/rejected, rejected = a near miss; heldout: prompt/answer/task/seen)."
                f"\n\n| task | seen | example | answer |\n|---|---|---|---|\n{examples}\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/chat_tasks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps({"out": args.out, "seed": args.seed, "rows": write(args.out, args.seed)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

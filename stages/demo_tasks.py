"""Checkable instruction tasks for the embedded CPU demo.

STDLIB ONLY: this module is imported by the lightweight orchestrator as well as by the training stages.

Every task is plain data: a ``name`` (also the instruction keyword that opens the prompt, e.g.
``"reverse: abcd"``), a ``seen`` flag, a generator ``make(rng) -> (prompt, answer)``, a checker and a
near-miss corrupter.  *Seen* tasks appear in the SFT / DPO / KTO training data (and their eval splits);
*unseen* tasks appear only in ``heldout.jsonl`` and measure zero-shot transfer.

Regenerate the demo data (byte-identical for a given seed)::

    python -m stages.demo_tasks --out data/demo --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
from dataclasses import dataclass
from typing import Callable

LETTERS = string.ascii_lowercase
DIGITS = string.digits


def norm(text: str) -> str:
    """Collapse runs of whitespace and strip; the canonical form the checker compares."""
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------------------------------
# Input helpers
# ----------------------------------------------------------------------------------------------------------------

# Every instruction keyword; content strings never contain one (the demo tokenizer turns keywords into single
# tokens, so a keyword hidden inside a random string would change how that string is tokenised).
KEYWORDS = ("copy", "reverse", "upper", "next", "add", "sort", "max", "len", "spaces",
            "lower", "min", "prev", "dashes")


def _word(rng: random.Random, lo: int, hi: int, alphabet: str = LETTERS) -> str:
    while True:
        w = "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))
        if not any(k in w.lower() for k in KEYWORDS):
            return w


def _digits(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(DIGITS) for _ in range(rng.randint(lo, hi)))


def _shift(s: str, d: int) -> str:
    return "".join(chr(ord(c) + d) for c in s)


# ----------------------------------------------------------------------------------------------------------------
# Near-miss corruptions (shared building blocks).  They mimic the errors a small, partly trained model makes:
# one wrong character, a dropped / duplicated character, two swapped neighbours, an off-by-one number.
# ----------------------------------------------------------------------------------------------------------------


def _sub_char(rng: random.Random, s: str, alphabet: str) -> str:
    if not s:
        return rng.choice(alphabet)
    i = rng.randrange(len(s))
    choices = [c for c in alphabet if c != s[i]]
    return s[:i] + rng.choice(choices) + s[i + 1:]


def _drop_char(rng: random.Random, s: str) -> str:
    if len(s) < 2:
        return s
    i = rng.randrange(len(s))
    return s[:i] + s[i + 1:]


def _dup_char(rng: random.Random, s: str) -> str:
    if not s:
        return s
    i = rng.randrange(len(s))
    return s[:i] + s[i] + s[i:]


def _swap_adjacent(rng: random.Random, s: str) -> str:
    if len(s) < 2:
        return s
    i = rng.randrange(len(s) - 1)
    return s[:i] + s[i + 1] + s[i] + s[i + 2:]


def _string_near_miss(rng: random.Random, s: str, alphabet: str) -> str:
    op = rng.choice(("sub", "sub", "drop", "dup", "swap"))
    if op == "sub":
        return _sub_char(rng, s, alphabet)
    if op == "drop":
        return _drop_char(rng, s)
    if op == "dup":
        return _dup_char(rng, s)
    return _swap_adjacent(rng, s)


def _number_near_miss(rng: random.Random, n: int) -> str:
    d = rng.choice([d for d in (-1, 1, -1, 1, -10, 10, -2, 2) if n + d >= 0])
    return str(n + d)


# ----------------------------------------------------------------------------------------------------------------
# Task definitions
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    seen: bool
    make: Callable[[random.Random], tuple[str, str]]
    near_miss: Callable[[random.Random, str, str], str]  # (rng, content, answer) -> wrong answer
    description: str = ""
    checker: Callable[[str, str, str], bool] | None = None  # (prompt, answer, output) -> bool; default exact

    def check(self, prompt: str, answer: str, output: str) -> bool:
        if self.checker is not None:
            return self.checker(prompt, answer, output)
        return norm(output) == norm(answer)


def _content(prompt: str) -> str:
    return prompt.split(": ", 1)[1] if ": " in prompt else prompt


SOLVERS: dict[str, Callable[[str], str]] = {}  # task name -> its answer from the prompt's content (`solve`)


def _mk(name: str, gen: Callable[[random.Random], str], solve: Callable[[str], str]):
    SOLVERS[name] = solve

    def make(rng: random.Random) -> tuple[str, str]:
        x = gen(rng)
        return f"{name}: {x}", solve(x)

    return make


def _list_gen(rng: random.Random) -> str:
    return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(3, 5)))


def _csv_gen(rng: random.Random) -> str:
    return ",".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 5)))


def _add_gen(rng: random.Random) -> str:
    return f"{rng.randint(0, 49)}+{rng.randint(0, 49)}"


def _add_solve(x: str) -> str:
    a, b = x.split("+")
    return str(int(a) + int(b))


def _extreme_near_miss(rng: random.Random, content: str, answer: str) -> str:
    # A list element that is not the extreme (the typical "picked the wrong item" error), else an off-by-one.
    others = sorted({v for v in content.split() if v != answer})
    if others and rng.random() < 0.7:
        return rng.choice(others)
    return _number_near_miss(rng, int(answer))


def _reverse_near_miss(rng: random.Random, content: str, answer: str) -> str:
    # Either the input copied back unreversed (when that differs) or a one-character slip in the reversal.
    if content != answer and rng.random() < 0.25:
        return content
    return _string_near_miss(rng, answer, LETTERS)


def _sep_near_miss(sep_ok: str, sep_bad: str):
    def f(rng: random.Random, content: str, answer: str) -> str:
        parts = answer.split(sep_ok)
        if rng.random() < 0.4 and len(parts) > 1:  # one separator left unconverted
            i = rng.randrange(len(parts) - 1)
            return sep_ok.join(parts[:i]) + (sep_ok if i else "") + parts[i] + sep_bad + sep_ok.join(parts[i + 1:])
        j = rng.randrange(len(parts))  # or one wrong letter
        parts[j] = _sub_char(rng, parts[j], LETTERS)
        return sep_ok.join(parts)

    return f


TASKS: dict[str, Task] = {}


def _register(task: Task) -> None:
    TASKS[task.name] = task


# Seen tasks -----------------------------------------------------------------------------------------------------
_register(Task("copy", True, _mk("copy", lambda r: _word(r, 3, 6), lambda x: x),
               lambda r, c, a: _string_near_miss(r, a, LETTERS), "repeat the word"))
_register(Task("reverse", True, _mk("reverse", lambda r: _word(r, 3, 5), lambda x: x[::-1]),
               _reverse_near_miss, "reverse the word"))
_register(Task("upper", True, _mk("upper", lambda r: _word(r, 3, 6), str.upper),
               lambda r, c, a: _string_near_miss(r, a, string.ascii_uppercase), "uppercase the word"))
_register(Task("next", True, _mk("next", lambda r: _word(r, 2, 4, LETTERS[:-1]), lambda x: _shift(x, 1)),
               lambda r, c, a: _string_near_miss(r, a, LETTERS), "replace every letter by the next one"))
_register(Task("add", True, _mk("add", _add_gen, _add_solve),
               lambda r, c, a: _number_near_miss(r, int(a)), "add two numbers below 50"))
_register(Task("sort", True, _mk("sort", lambda r: _digits(r, 3, 5), lambda x: "".join(sorted(x))),
               lambda r, c, a: _string_near_miss(r, a, DIGITS), "sort the digits"))
_register(Task("max", True, _mk("max", _list_gen, lambda x: max(x.split())),
               _extreme_near_miss, "largest digit of the list"))
_register(Task("len", True, _mk("len", lambda r: _word(r, 1, 9), lambda x: str(len(x))),
               lambda r, c, a: _number_near_miss(r, int(a)) if a != "1" else "2", "length of the word"))
_register(Task("spaces", True, _mk("spaces", _csv_gen, lambda x: x.replace(",", " ")),
               _sep_near_miss(" ", ","), "commas to spaces"))

# Unseen tasks (held-out only) -------------------------------------------------------------------------------------
_register(Task("lower", False, _mk("lower", lambda r: _word(r, 3, 6).upper(), str.lower),
               lambda r, c, a: _string_near_miss(r, a, LETTERS), "lowercase the word"))
_register(Task("min", False, _mk("min", _list_gen, lambda x: min(x.split())),
               _extreme_near_miss, "smallest digit of the list"))
_register(Task("prev", False, _mk("prev", lambda r: _word(r, 2, 4, LETTERS[1:]), lambda x: _shift(x, -1)),
               lambda r, c, a: _string_near_miss(r, a, LETTERS), "replace every letter by the previous one"))
_register(Task("dashes", False, _mk("dashes", _csv_gen, lambda x: x.replace(",", "-")),
               _sep_near_miss("-", ","), "commas to dashes"))

SEEN_TASKS = tuple(n for n, t in TASKS.items() if t.seen)
UNSEEN_TASKS = tuple(n for n, t in TASKS.items() if not t.seen)


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def task_of(prompt: str) -> str | None:
    """The task name a prompt belongs to (its leading keyword), or None."""
    head = prompt.split(":", 1)[0].strip()
    return head if head in TASKS else None


def check(task: str, prompt: str, answer: str, output: str) -> bool:
    """True when ``output`` solves ``prompt`` (whitespace-normalised exact match with the reference answer)."""
    t = TASKS.get(task)
    if t is None:
        return norm(output) == norm(answer)
    return t.check(prompt, answer, output)


def solve(prompt: str) -> str | None:
    """The reference answer of any prompt of a demo task (``reverse: abcd`` -> ``dcba``), e.g. one a teacher
    model wrote; None when no demo task can answer it (unknown keyword, malformed content)."""
    task = task_of(prompt)
    if task not in SOLVERS or ": " not in prompt:
        return None
    try:
        answer = SOLVERS[task](_content(prompt).strip())
    except (ValueError, IndexError, TypeError):
        return None
    return answer if answer.strip() else None


def corrupt(task: str, rng: random.Random, prompt: str, answer: str) -> str:
    """A plausible near-miss wrong answer for ``prompt`` (never passes ``check``)."""
    t = TASKS[task]
    content = _content(prompt)
    for _ in range(100):
        bad = t.near_miss(rng, content, answer)
        if bad.strip() and not check(task, prompt, answer, bad):
            return bad
    # Fallback that can never be right: append a character.
    return answer + ("0" if answer[-1:].isdigit() else "a")


def make(task: str, rng: random.Random) -> tuple[str, str]:
    return TASKS[task].make(rng)


# ----------------------------------------------------------------------------------------------------------------
# Dataset writer
# ----------------------------------------------------------------------------------------------------------------

# Rows per seen task in each file (the unseen tasks only get held-out rows).
SIZES = {"sft": 300, "sft_eval": 20, "prefs": 240, "prefs_eval": 20, "kto": 120, "kto_eval": 10, "heldout": 40}


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def build(seed: int = 0, sizes: dict | None = None) -> dict[str, list[dict]]:
    """Build every split in memory.  Prompts are unique across all files (train / eval / held-out disjoint)."""
    sizes = {**SIZES, **(sizes or {})}
    used: set[str] = set()
    out: dict[str, list[dict]] = {k: [] for k in sizes}

    def draw(rng: random.Random, task: str) -> tuple[str, str]:
        for _ in range(10000):
            p, a = TASKS[task].make(rng)
            if p not in used:
                used.add(p)
                return p, a
        raise RuntimeError(f"task {task!r}: input space exhausted")

    # Held-out first (so it is independent of the training sizes), then eval, then train.
    order = ["heldout", "sft_eval", "prefs_eval", "kto_eval", "sft", "prefs", "kto"]
    for split in order:
        rng = random.Random(f"{seed}/{split}")
        tasks = list(TASKS) if split == "heldout" else list(SEEN_TASKS)
        rows = []
        for task in tasks:
            n = sizes[split]
            for i in range(n):
                p, a = draw(rng, task)
                if split.startswith("sft"):
                    rows.append({"messages": _user(p) + _assistant(a), "task": task})
                elif split.startswith("prefs"):
                    rows.append({"prompt": _user(p), "chosen": _assistant(a),
                                 "rejected": _assistant(corrupt(task, rng, p, a)), "task": task})
                elif split.startswith("kto"):
                    # Balanced: one half desirable (correct), the other half undesirable (near miss).
                    good = i % 2 == 0
                    comp = a if good else corrupt(task, rng, p, a)
                    rows.append({"prompt": _user(p), "completion": _assistant(comp), "label": good, "task": task})
                else:
                    rows.append({"prompt": _user(p), "answer": a, "task": task, "seen": TASKS[task].seen})
        rng.shuffle(rows)
        out[split] = rows
    return out


README = """# Demo data (generated)

Tiny instruction tasks whose answers a program checks (`stages/demo_tasks.py`).  Regenerate, byte-identical:

    python -m stages.demo_tasks --out data/demo --seed {seed}

Prompts look like `reverse: abcd`; the first word names the task.

| file | rows | format |
|---|---|---|
| `sft.jsonl`, `sft_eval.jsonl` | {sft}, {sft_eval} | `{{"messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}], "task"}}` |
| `prefs.jsonl`, `prefs_eval.jsonl` | {prefs}, {prefs_eval} | `{{"prompt": [user], "chosen": [assistant], "rejected": [assistant], "task"}}` (rejected = near miss) |
| `kto.jsonl`, `kto_eval.jsonl` | {kto}, {kto_eval} | `{{"prompt": [user], "completion": [assistant], "label": bool, "task"}}` (balanced labels) |
| `heldout.jsonl` | {heldout} | `{{"prompt": [user], "answer": str, "task": str, "seen": bool}}` |

Seen tasks (training + eval + held-out): {seen}.
Unseen tasks (held-out only, zero-shot transfer): {unseen}.

Every prompt is unique across all files, so training, eval and held-out prompts never overlap.
Score a model output with `stages.demo_tasks.check(task, prompt, answer, output)`.
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
        f.write(README.format(seed=seed, seen=", ".join(SEEN_TASKS), unseen=", ".join(UNSEEN_TASKS), **counts))
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

"""Checkable instruction tasks for the embedded CPU demo.

STDLIB ONLY: verifiers built on it run in stage processes, and the data generator needs nothing else.

Every task is plain data: a ``name`` (also the instruction keyword that opens the prompt, e.g.
``"reverse: abcd"``), a ``seen`` flag, a generator ``make(rng) -> (prompt, answer)``, a checker and a
near-miss corrupter.  *Seen* tasks appear in the SFT / DPO / KTO training data (and their eval splits);
*unseen* tasks appear only in ``heldout.jsonl`` and measure zero-shot transfer.

Regenerate the demo data (byte-identical for a given seed)::

    python -m demo.data --out data/demo --seed 0
"""

from __future__ import annotations

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
# Near-miss corruptions.  They mimic the errors a small, partly trained model actually makes on these tasks
# (measured on the demo model after SFT): one position holding a letter copied from elsewhere in the word, two
# neighbours swapped, one wrong letter (mostly in the middle of a reversal), a sorted string with one digit off,
# a sum or a maximum off by one or by ten.  Realistic negatives are what lets DPO / KTO improve on SFT.
# ----------------------------------------------------------------------------------------------------------------


def _swap_adjacent(rng: random.Random, s: str, positions=None) -> str:
    pos = [i for i in (positions or range(len(s) - 1)) if i + 1 < len(s) and s[i] != s[i + 1]]
    if not pos:
        return s
    i = rng.choice(pos)
    return s[:i] + s[i + 1] + s[i] + s[i + 2:]


def _slip(rng: random.Random, s: str, alphabet: str, positions=None) -> str:
    """One position replaced: by a letter copied from another position of ``s`` (the commonest error of a small
    model), else by a random symbol of ``alphabet``."""
    if not s:
        return rng.choice(alphabet)
    i = rng.choice(list(positions) if positions else range(len(s)))
    others = sorted({c for c in s if c != s[i]})
    if others and rng.random() < 0.5:
        c = rng.choice(others)
    else:
        c = rng.choice([c for c in alphabet if c != s[i]])
    return s[:i] + c + s[i + 1:]


def _string_near_miss(rng: random.Random, s: str, alphabet: str, positions=None) -> str:
    if rng.random() < 0.25:
        return _swap_adjacent(rng, s, positions)
    return _slip(rng, s, alphabet, positions)


def _number_near_miss(rng: random.Random, n: int, deltas=(-1, 1, -1, 1, -2, 2, -10, 10, -9, 9, -11, 11)) -> str:
    d = rng.choice([d for d in deltas if n + d >= 0])
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
    return ",".join(_word(rng, 4, 4))


def _add_gen(rng: random.Random) -> str:
    return f"{rng.randint(0, 49)}+{rng.randint(0, 49)}"


def _add_solve(x: str) -> str:
    a, b = x.split("+")
    return str(int(a) + int(b))


def _max_near_miss(rng: random.Random, content: str, answer: str) -> str:
    # Mostly "one too high" (what the demo model gets wrong), else another element of the list, else one lower.
    others = sorted({v for v in content.split() if v != answer})
    r = rng.random()
    if r < 0.5 and answer != "9":
        return str(int(answer) + 1)
    if r < 0.8 and others:
        return rng.choice(others)
    return str(int(answer) - 1) if answer != "0" else "1"


def _min_near_miss(rng: random.Random, content: str, answer: str) -> str:
    others = sorted({v for v in content.split() if v != answer})
    r = rng.random()
    if r < 0.5 and answer != "0":
        return str(int(answer) - 1)
    if r < 0.8 and others:
        return rng.choice(others)
    return str(int(answer) + 1) if answer != "9" else "8"


def _reverse_near_miss(rng: random.Random, content: str, answer: str) -> str:
    # The ends of a reversal are easy, the middle is where a small model slips.
    middle = range(1, len(answer) - 1) if len(answer) > 2 and rng.random() < 0.8 else None
    return _string_near_miss(rng, answer, LETTERS, middle)


def _shift_near_miss(d: int):
    def f(rng: random.Random, content: str, answer: str) -> str:
        i = rng.randrange(len(answer))
        r = rng.random()
        if r < 0.3:
            c = content[i]  # left unshifted
        elif r < 0.5:
            c = chr(ord(answer[i]) + d) if LETTERS[0] <= chr(ord(answer[i]) + d) <= LETTERS[-1] else content[i]
        else:
            c = rng.choice([c for c in LETTERS if c != answer[i]])
        return answer[:i] + c + answer[i + 1:]

    return f


def _sort_near_miss(rng: random.Random, content: str, answer: str) -> str:
    # Still sorted, one digit off: a neighbour duplicated or a digit off by one (duplicates are the hard part).
    i = rng.randrange(len(answer))
    cands = {answer[j] for j in (i - 1, i + 1) if 0 <= j < len(answer)}
    cands |= {str(int(answer[i]) + d) for d in (-1, 1) if 0 <= int(answer[i]) + d <= 9}
    cands.discard(answer[i])
    if not cands:
        return _slip(rng, answer, DIGITS)
    return "".join(sorted(answer[:i] + rng.choice(sorted(cands)) + answer[i + 1:]))


def _sep_near_miss(sep_ok: str, sep_bad: str):
    def f(rng: random.Random, content: str, answer: str) -> str:
        parts = answer.split(sep_ok)
        if rng.random() < 0.4 and len(parts) > 1:  # one separator left unconverted
            i = rng.randrange(len(parts) - 1)
            return sep_ok.join(parts[:i]) + (sep_ok if i else "") + parts[i] + sep_bad + sep_ok.join(parts[i + 1:])
        letters = _string_near_miss(rng, "".join(parts), LETTERS)  # or one letter slipped
        return sep_ok.join(letters)

    return f


TASKS: dict[str, Task] = {}


def _register(task: Task) -> None:
    TASKS[task.name] = task


# Seen tasks -----------------------------------------------------------------------------------------------------
# Lengths are fixed where the answer copies the input position by position: a ~0.5M-parameter model learns the
# copy circuit within a few hundred steps when the offset between input and answer is constant, but not when it
# varies from prompt to prompt.
_register(Task("copy", True, _mk("copy", lambda r: _word(r, 4, 4), lambda x: x),
               lambda r, c, a: _string_near_miss(r, a, LETTERS), "repeat the 4-letter word"))
_register(Task("reverse", True, _mk("reverse", lambda r: _word(r, 4, 4), lambda x: x[::-1]),
               _reverse_near_miss, "reverse the 4-letter word"))
_register(Task("upper", True, _mk("upper", lambda r: _word(r, 4, 4), str.upper),
               lambda r, c, a: _string_near_miss(r, a, string.ascii_uppercase), "uppercase the 4-letter word"))
_register(Task("next", True, _mk("next", lambda r: _word(r, 3, 3, LETTERS[:-1]), lambda x: _shift(x, 1)),
               _shift_near_miss(1), "replace each of 3 letters by the next one"))
_register(Task("add", True, _mk("add", _add_gen, _add_solve),
               lambda r, c, a: _number_near_miss(r, int(a)), "add two numbers below 50"))
_register(Task("sort", True, _mk("sort", lambda r: _digits(r, 4, 4), lambda x: "".join(sorted(x))),
               _sort_near_miss, "sort 4 digits"))
_register(Task("max", True, _mk("max", _list_gen, lambda x: max(x.split())),
               _max_near_miss, "largest of 3-5 digits"))
_register(Task("len", True, _mk("len", lambda r: _word(r, 1, 9), lambda x: str(len(x))),
               lambda r, c, a: _number_near_miss(r, int(a), (-1, 1)), "length of a 1-9 letter word"))
_register(Task("spaces", True, _mk("spaces", _csv_gen, lambda x: x.replace(",", " ")),
               _sep_near_miss(" ", ","), "commas to spaces (4 letters)"))

# Unseen tasks (held-out only) -------------------------------------------------------------------------------------
_register(Task("lower", False, _mk("lower", lambda r: _word(r, 4, 4).upper(), str.lower),
               lambda r, c, a: _string_near_miss(r, a, LETTERS), "lowercase the 4-letter word"))
_register(Task("min", False, _mk("min", _list_gen, lambda x: min(x.split())),
               _min_near_miss, "smallest of 3-5 digits"))
_register(Task("prev", False, _mk("prev", lambda r: _word(r, 3, 3, LETTERS[1:]), lambda x: _shift(x, -1)),
               _shift_near_miss(-1), "replace each of 3 letters by the previous one"))
_register(Task("dashes", False, _mk("dashes", _csv_gen, lambda x: x.replace(",", "-")),
               _sep_near_miss("-", ","), "commas to dashes (4 letters)"))

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


def check_or_solve(task: str | None, prompt: str, answer: str | None, output: str) -> bool:
    """The demo verifier, also for prompts without a reference answer (solved from the prompt)."""
    if answer is None:
        answer = solve(prompt)
    if answer is None:
        return False  # no reference, and no demo task can answer the prompt
    return check(task or task_of(prompt) or "", prompt, str(answer), output)


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
SIZES = {"sft": 400, "sft_eval": 20, "prefs": 300, "prefs_eval": 20, "kto": 120, "kto_eval": 10, "heldout": 40}


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
        crng = random.Random(f"{seed}/{split}/corrupt")  # near misses do not shift the prompt stream
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
                                 "rejected": _assistant(corrupt(task, crng, p, a)), "task": task})
                elif split.startswith("kto"):
                    # Balanced: one half desirable (correct), the other half undesirable (near miss).
                    good = i % 2 == 0
                    comp = a if good else corrupt(task, crng, p, a)
                    rows.append({"prompt": _user(p), "completion": _assistant(comp), "label": good, "task": task})
                else:
                    rows.append({"prompt": _user(p), "answer": a, "task": task, "seen": TASKS[task].seen})
        rng.shuffle(rows)
        out[split] = rows
    return out

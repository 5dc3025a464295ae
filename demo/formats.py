"""Write the demo data in every format posttrain reads: `python -m demo.formats`.

Each file (data/formats/) takes its own slice of data/demo/sft.jsonl or prefs.jsonl, so no two
files share a row (the data check would flag the duplicates) and the held-out prompts stay unseen.
`conf/pipeline/formats.yaml` trains on all of them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROWS = 200  # per file: enough for a few demo steps, small enough for the repo


def _turns(row: dict[str, Any]) -> tuple[str, str]:
    messages = row["messages"]
    return messages[0]["content"], messages[1]["content"]


def alpaca(row: dict[str, Any]) -> dict[str, Any]:
    task, _, content = _turns(row)[0].partition(": ")
    return {"instruction": task, "input": content, "output": _turns(row)[1]}


def sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    user, assistant = _turns(row)
    return {"conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]}


def messages(row: dict[str, Any]) -> dict[str, Any]:
    return {"messages": row["messages"]}


def chat_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": row["messages"][:1], "completion": row["messages"][1:]}


def text(row: dict[str, Any]) -> dict[str, Any]:
    user, assistant = _turns(row)
    return {"text": f"Q: {user}\nA: {assistant}"}


def prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    user, assistant = _turns(row)
    return {"prompt": f"Q: {user}\nA:", "completion": f" {assistant}"}


def implicit_pairs(row: dict[str, Any]) -> dict[str, Any]:
    """Plain-string pairs whose prompt is implicit: the start both answers share."""
    prompt = f"Q: {row['prompt'][0]['content']}\nA:"
    return {"chosen": f"{prompt} {row['chosen'][0]['content']}", "rejected": f"{prompt} {row['rejected'][0]['content']}"}


# file -> (demo file, converter); files of one demo source take consecutive slices of it.
FILES: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "messages.jsonl": ("sft.jsonl", messages),
    "alpaca.jsonl": ("sft.jsonl", alpaca),
    "sharegpt.jsonl": ("sft.jsonl", sharegpt),
    "prompt_completion_chat.jsonl": ("sft.jsonl", chat_prompt_completion),
    "text.jsonl": ("sft.jsonl", text),
    "prompt_completion.jsonl": ("sft.jsonl", prompt_completion),
    "prefs_implicit.jsonl": ("prefs.jsonl", implicit_pairs),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="data/demo", help="where the demo data is")
    parser.add_argument("--out", default="data/formats")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    offsets: dict[str, int] = {}
    for name, (source, convert) in FILES.items():
        lines = Path(args.demo, source).read_text().splitlines()
        start = offsets.get(source, 0)
        offsets[source] = start + ROWS
        rows = [convert(json.loads(line)) for line in lines[start:start + ROWS]]
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{out / name}: {len(rows)} rows")


if __name__ == "__main__":
    main()

"""Rebuild the demo's tiny byte-level BPE tokenizer (``demo/tiny_tokenizer``) from the demo data.

    python -m demo.build_tokenizer [--data data/demo] [--out demo/tiny_tokenizer]

Design (for a ~1M-parameter model learning string tasks):

* the 256 byte symbols (GPT-2 byte-level alphabet) are the base vocabulary, so any text round-trips;
* the pre-tokenizer isolates each task keyword (the word that opens a prompt, e.g. ``reverse``) and splits
  everything else into single characters, so BPE merges are learned only inside keywords: every keyword becomes
  one token while task contents (letters, digits, commas, spaces) stay strictly one token per character;
* special tokens ``<|bos|>``, ``<|end|>`` (eos, ends every turn), ``<|pad|>``, ``<|user|>``, ``<|assistant|>``,
  ``<|system|>``;
* a chat template whose assistant content and closing ``<|end|>`` sit inside ``{% generation %}`` markers, so
  ``return_assistant_tokens_mask=True`` marks exactly the response plus its end token.

The build is deterministic: re-running it on the same data writes byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "tiny_tokenizer")
DEFAULT_DATA = os.path.join(os.path.dirname(HERE), "data", "demo")

BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _texts(data_dir: str):
    """All user / assistant strings of the demo data, in file order (deterministic)."""
    for name in sorted(os.listdir(data_dir)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(data_dir, name), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                for key in ("messages", "prompt", "chosen", "rejected", "completion"):
                    for msg in row.get(key) or []:
                        yield msg["content"]
                if isinstance(row.get("answer"), str):
                    yield row["answer"]


def _keywords(data_dir: str) -> list[str]:
    """Task keywords: the word before ':' that opens each user prompt."""
    kws = set()
    for name in sorted(os.listdir(data_dir)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(data_dir, name), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                msgs = row.get("messages") or row.get("prompt") or []
                for msg in msgs:
                    if msg["role"] == "user":
                        m = re.match(r"([a-z]+):", msg["content"])
                        if m:
                            kws.add(m.group(1))
    # Longest first so that alternation prefers the longest keyword at a position.
    return sorted(kws, key=lambda k: (-len(k), k))


def build(data_dir: str = DEFAULT_DATA, out_dir: str = DEFAULT_OUT):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    keywords = _keywords(data_dir)
    if not keywords:
        raise SystemExit(f"no task keywords found under {data_dir}; generate the data first "
                         "(python -m demo.data --out data/demo)")
    pattern = "|".join(re.escape(k) for k in keywords) + r"|[\s\S]"

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,  # an upper bound: merges stop once every keyword is a single token
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Keywords are listed explicitly too, so every task (seen or not) gets its token even in a partial data dir.
    tok.train_from_iterator(list(keywords) + list(_texts(data_dir)), trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        model_max_length=256,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast, keywords


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Rebuild the tiny demo tokenizer.")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    fast, keywords = build(args.data, args.out)
    print(json.dumps({"out": args.out, "vocab_size": len(fast), "keywords": keywords}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

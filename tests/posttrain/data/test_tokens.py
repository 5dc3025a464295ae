"""Chat rendering and token counts match transformers and TRL's tokenization (posttrain/data/tokens.py)."""

from __future__ import annotations

from tests.conftest import ROOT

TINY_TOKENIZER = ROOT / "demo" / "tiny_tokenizer"
THINK = "<think>The word is 'ab'; copied, it stays 'ab'.</think>ab"  # chain of thought, kept verbatim


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


CONVERSATIONS = [
    [user("copy: ab"), assistant("ab")],
    [{"role": "system", "content": "Be brief."}, user("reverse: abc"), assistant(THINK)],
    [user("len: abcd"), assistant("4"), user("and now: ab"), assistant("2")],
]


def test_chat_rendering_and_token_counts_match_transformers_and_trl():
    from transformers import AutoTokenizer
    from trl.data_utils import common_prefix_length

    from posttrain.data.tokens import TokenCounter

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    counter = TokenCounter.from_dir(TINY_TOKENIZER)
    for conversation in CONVERSATIONS:
        assert counter.render(conversation) == tokenizer.apply_chat_template(conversation, tokenize=False)
        assert counter.render(conversation[:-1], True) == tokenizer.apply_chat_template(
            conversation[:-1], tokenize=False, add_generation_prompt=True)
    rows = [{"prompt": c[:-1], "chosen": c[-1:], "rejected": [assistant("nope")]} for c in CONVERSATIONS]
    rows.append({"prompt": "Q: copy: ab\nA:", "chosen": " ab", "rejected": " aab"})
    for row, (prompt_len, longest) in zip(rows, counter.lengths(rows)):
        if isinstance(row["prompt"], list):  # what DPOTrainer._prepare_dataset computes
            ids = lambda msgs, **kw: tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, **kw)["input_ids"]
            prompt = ids(row["prompt"], add_generation_prompt=True)
            fulls = [ids(row["prompt"] + row[k]) for k in ("chosen", "rejected")]
        else:
            prompt = tokenizer(text=row["prompt"])["input_ids"]
            fulls = [tokenizer(text=row["prompt"] + row[k] + tokenizer.eos_token)["input_ids"] for k in ("chosen", "rejected")]
        assert prompt_len == min(common_prefix_length(prompt, f) for f in fulls)
        assert longest == max(len(f) for f in fulls)

"""Sampling from a local model: batched generation and response log-probabilities (eval, generate, onpolicy).

Prompts go through the chat template with its generation prompt, are left-padded and generated
in batches; responses are scored as the trainers see them: the tokens the chat template adds after
the prompt for an assistant turn (the answer and its end-of-turn token).
"""

from __future__ import annotations

from typing import Any

from posttrain.spec import ModelRef, StageSpec
from stages.lib.models import load_model, load_tokenizer

Messages = list[dict[str, Any]]


def load(model: ModelRef, spec: StageSpec) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of a model input of the spec."""
    tokenizer = load_tokenizer(model, spec)
    loaded = load_model(model, spec)
    loaded.eval()
    return loaded, tokenizer


def to_messages(prompt: str | Messages) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def prompt_ids(tokenizer: Any, prompt: str | Messages) -> list[int]:
    return list(tokenizer.apply_chat_template(to_messages(prompt), add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def generate(model: Any, tokenizer: Any, prompts: list[str | Messages], max_new_tokens: int, batch_size: int,
             num_samples: int = 1, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> list[list[str]]:
    """`num_samples` completions per prompt (greedy when temperature is 0), decoded without special tokens.

    Prompts of similar length share a batch (less padding); the output keeps the input order.
    """
    import torch

    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[list[str]] = [[] for _ in prompts]
    pad = tokenizer.pad_token_id
    configured = getattr(model.generation_config, "eos_token_id", None)  # e.g. Llama 3's end-of-turn ids
    stop = [tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])]
    stop = [t for t in dict.fromkeys(stop) if t is not None]
    sampling = temperature > 0
    draws = num_samples if sampling else 1  # greedy decoding gives the same answer every time
    torch.manual_seed(seed)
    per_batch = max(1, batch_size // draws)
    with torch.inference_mode():
        for start in range(0, len(order), per_batch):
            batch = order[start:start + per_batch]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in batch])
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch])
            kwargs = {"do_sample": True, "temperature": temperature, "top_p": top_p} if sampling else {
                "do_sample": False}
            generated = model.generate(input_ids=ids.to(_device(model)), attention_mask=mask.to(_device(model)),
                                       max_new_tokens=max_new_tokens, num_return_sequences=draws,
                                       pad_token_id=pad, eos_token_id=stop, **kwargs)
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for j, i in enumerate(batch):
                out[i] = [t.strip() for t in texts[j * draws:(j + 1) * draws]] * (num_samples // draws)
    return out


def response_logprobs(model: Any, tokenizer: Any, prompts: list[str | Messages], responses: list[str],
                      batch_size: int, max_length: int) -> list[tuple[float, int]]:
    """(sum of log p over the response tokens, number of response tokens) per (prompt, response).

    Rows longer than `max_length` lose the end of their response (as the trainers truncate).
    """
    import torch

    rows = []
    for prompt, response in zip(prompts, responses):
        head = prompt_ids(tokenizer, prompt)
        full = list(tokenizer.apply_chat_template(to_messages(prompt) + [{"role": "assistant", "content": response}],
                                                  tokenize=True, return_dict=True)["input_ids"])
        if full[:len(head)] != head:  # a template that renders the prompt differently once answered
            raise SystemExit("the chat template renders a prompt differently once it has an answer; "
                             "response log-probabilities need the prompt's tokens to be a prefix")
        rows.append((full[:max_length], min(len(head), max_length)))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(rows[i][0]) for i in batch)
            ids = torch.tensor([rows[i][0] + [pad] * (width - len(rows[i][0])) for i in batch])
            mask = torch.tensor([[1] * len(rows[i][0]) + [0] * (width - len(rows[i][0])) for i in batch])
            # labels: response tokens only (position t predicts token t + 1)
            scored = torch.zeros_like(ids, dtype=torch.bool)
            for j, i in enumerate(batch):
                tokens, prompt_len = rows[i]
                scored[j, prompt_len:len(tokens)] = True
            logits = model(input_ids=ids.to(_device(model)), attention_mask=mask.to(_device(model))).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            token_logp = logp.gather(-1, ids[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1)
            target = scored[:, 1:].to(logp.device)
            sums = (token_logp * target).sum(-1).tolist()
            counts = target.sum(-1).tolist()
            for j, i in enumerate(batch):
                out[i] = (float(sums[j]), int(counts[j]))
    return out

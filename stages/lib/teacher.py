"""Teachers and judges: a local model (transformers generate) or an OpenAI-compatible endpoint.

The endpoint client is plain urllib: POST <endpoint>/chat/completions with `model`, `messages`,
`temperature`, `top_p`, `max_tokens`, `n`, `seed`; requests run `batch_size` at a time in threads;
429, 5xx and connection errors are retried with exponential backoff, other HTTP errors stop the
stage (a wrong URL, model name or key never gets better). The API key is read from the
environment variable named by `api_key_env` and sent as a bearer token; it is never logged.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from posttrain.spec import ModelRef, StageSpec
from stages.lib.sampling import generate, load

Messages = list[dict[str, Any]]
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class Teacher(Protocol):
    requests: int
    errors: int

    def chat(self, conversations: list[Messages], n: int = 1) -> list[list[str | None]]:
        """`n` replies per conversation; None for a reply that could not be had."""
        ...


class LocalTeacher:
    """A model directory or hub id run with transformers (batched, left-padded)."""

    def __init__(self, settings: dict[str, Any], spec: StageSpec, seed: int):
        self.settings, self.seed, self.requests, self.errors = settings, seed, 0, 0
        model = ModelRef(**{k: v for k, v in settings.items() if k in ModelRef.__dataclass_fields__})
        self.model, self.tokenizer = load(model, spec)

    def chat(self, conversations: list[Messages], n: int = 1) -> list[list[str | None]]:
        self.requests += len(conversations)
        self.seed += 1  # a new draw for every call
        return generate(self.model, self.tokenizer, conversations, self.settings["max_new_tokens"],
                        self.settings["batch_size"], num_samples=n, temperature=self.settings["temperature"],
                        top_p=self.settings["top_p"], seed=self.seed)


class EndpointError(SystemExit):
    """The endpoint refused in a way retrying cannot fix (bad URL, model, key or request)."""


class EndpointTeacher:
    """An OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp, SGLang, OpenAI...)."""

    def __init__(self, settings: dict[str, Any], seed: int):
        self.settings, self.seed, self.requests, self.errors = settings, seed, 0, 0
        base = settings["endpoint"].rstrip("/")
        self.url = base if base.endswith("/chat/completions") else f"{base}/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if settings.get("api_key_env"):
            key = os.environ.get(settings["api_key_env"])
            if not key:
                raise EndpointError(f"environment variable {settings['api_key_env']} (the API key) is not set")
            self.headers["Authorization"] = f"Bearer {key}"

    def _post(self, body: dict[str, Any]) -> dict[str, Any] | None:
        delay = 0.5
        for attempt in range(self.settings["max_retries"] + 1):
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=self.headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.settings["timeout"]) as response:
                    return json.loads(response.read().decode())
            except urllib.error.HTTPError as err:
                if err.code not in RETRY_STATUS:
                    detail = err.read().decode(errors="replace")[:300]
                    hint = " (check api_key_env)" if err.code in (401, 403) else ""
                    raise EndpointError(f"{self.url} answered HTTP {err.code}{hint}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError):
                pass
            if attempt < self.settings["max_retries"]:
                time.sleep(delay)
                delay *= 2
        return None

    def _one(self, job: tuple[int, Messages, int]) -> list[str | None]:
        index, messages, n = job
        body = {"model": self.settings["model"], "messages": messages, "temperature": self.settings["temperature"],
                "top_p": self.settings["top_p"], "max_tokens": self.settings["max_new_tokens"], "n": n,
                "seed": self.seed + index}
        reply = self._post(body)
        if reply is None:
            self.errors += 1
            return [None] * n
        texts = [((c.get("message") or {}).get("content") or "").strip() for c in reply.get("choices") or []]
        return (texts + [None] * n)[:n]

    def chat(self, conversations: list[Messages], n: int = 1) -> list[list[str | None]]:
        jobs = [(self.requests + i, messages, n) for i, messages in enumerate(conversations)]
        self.requests += len(conversations)
        with ThreadPoolExecutor(max_workers=max(1, self.settings["batch_size"])) as pool:
            return list(pool.map(self._one, jobs))


def make_teacher(settings: dict[str, Any], spec: StageSpec, seed: int) -> Teacher:
    return EndpointTeacher(settings, seed) if settings.get("endpoint") else LocalTeacher(settings, spec, seed)


JUDGE_PROMPT = """You check answers. Instruction:
{instruction}

Response:
{response}

Is the response a correct and complete answer to the instruction? Reply with one word: yes or no."""


def judge_verdicts(judge: Teacher, pairs: list[tuple[str, str]]) -> list[bool]:
    """A judge model's yes/no per (instruction, response); no reply counts as no."""
    prompts = [[{"role": "user", "content": JUDGE_PROMPT.format(instruction=i, response=r)}] for i, r in pairs]
    return [bool(reply[0]) and reply[0].strip().lower().startswith("yes") for reply in judge.chat(prompts)]

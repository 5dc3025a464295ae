"""Token lengths of trainer rows as TRL will see them, without transformers (the planner stays light).

The tokenizer is the `tokenizers` library reading the model's tokenizer.json (~50 ms to import);
conversations are rendered with the chat template through jinja2 configured like transformers'
`apply_chat_template` (sandboxed, trim_blocks/lstrip_blocks, `{% generation %}` accepted, special
tokens as variables). Lengths mirror TRL's tokenization: rendered chats are tokenized without
adding special tokens, plain strings with them, and plain responses get the EOS token appended.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers aliases these for templates


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def load_chat_template(tokenizer_dir: Path, override: str | None = None) -> str | None:
    """The chat template a stage will use: the `model.chat_template` file, else the tokenizer's own
    (chat_template.jinja next to it, or `chat_template` in tokenizer_config.json)."""
    if override:
        return Path(override).expanduser().read_text()
    jinja = tokenizer_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = tokenizer_dir / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    if isinstance(template, list):  # named templates: the `default` one is used for chats
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


def compile_chat_template(source: str) -> Any:
    """A jinja2 template compiled the way transformers compiles chat templates."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant tokens for the loss mask; here it
        only renders its body (transformers' AssistantTracker, without the tracking)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def has_generation_markers(template: str | None) -> bool:
    return bool(template and re.search(r"\{%-?\s*generation\s*-?%\}", template))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class UnreadableTokenizer(ValueError):
    """tokenizer.json or tokenizer_config.json is there but is not what it claims to be."""


class TokenCounter:
    """(prompt tokens, longest full sequence) per trainer row, with the policy's tokenizer."""

    def __init__(self, tokenizer_dir: Path, chat_template: str | None = None):
        from tokenizers import Tokenizer

        self.tokenizer_dir = tokenizer_dir
        config_path = tokenizer_dir / "tokenizer_config.json"
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
            config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        except Exception as e:  # the tokenizers library raises a bare Exception on a malformed file
            raise UnreadableTokenizer(f"the tokenizer in '{tokenizer_dir}' cannot be read ({e}); "
                                      "save it again with tokenizer.save_pretrained") from None
        self.special = {k: _token_text(config[k]) for k in SPECIAL_TOKENS if config.get(k)}
        self.eos = self.special.get("eos_token") or ""
        self.template_source = chat_template

    @classmethod
    def from_dir(cls, tokenizer_dir: str | Path, chat_template_file: str | None = None) -> TokenCounter | None:
        """None when the directory has no tokenizer.json (a hub id, or a model not built yet)."""
        path = Path(tokenizer_dir).expanduser()
        if not (path / "tokenizer.json").is_file():
            return None
        return cls(path, load_chat_template(path, chat_template_file))

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256((self.tokenizer_dir / "tokenizer.json").read_bytes())
        digest.update(json.dumps([self.special, self.template_source]).encode())
        return digest.hexdigest()

    @cached_property
    def _template(self) -> tuple[Any, dict[str, Any]]:
        template = compile_chat_template(self.template_source)
        return template, {**template.globals, "tools": None, "documents": None, **self.special}

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        """The chat as transformers renders it (None-valued keys dropped, reasoning fields aliased)."""
        chat = messages
        if any(v is None or k in REASONING_FIELDS for m in messages for k, v in m.items()):
            chat = []
            for message in messages:
                message = {k: v for k, v in message.items() if v is not None}
                reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
                if reasoning is not None:
                    message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
                chat.append(message)
        template, base = self._template
        # Template.render() copies every global per call; a shared context over one prebuilt dict is
        # half the cost and renders the same (what render() does after building its context).
        context = template.new_context({**base, "messages": chat, "add_generation_prompt": add_generation_prompt},
                                       shared=True)
        return template.environment.concat(template.root_render_func(context))

    def _pieces(self, row: dict[str, Any]) -> tuple[str, list[str], bool]:
        """(prompt, full sequences, rendered chat?): the strings TRL tokenizes for a row."""
        if "text" in row:
            return "", [self._plain(row["text"])], False
        if "messages" in row:
            messages = row["messages"]
            first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
            prompt = self.render(messages[:first], add_generation_prompt=True) if first else ""
            return prompt, [self.render(messages)], True
        prompt = row["prompt"]
        answers = [row[k] for k in ("chosen", "rejected", "completion") if k in row]
        if isinstance(prompt, list):
            return (self.render(prompt, add_generation_prompt=True),
                    [self.render(prompt + answer) for answer in answers], True)
        return prompt, [prompt + self._plain(answer) for answer in answers], False

    def _plain(self, text: str) -> str:
        return text if text.endswith(self.eos) else text + self.eos  # TRL appends EOS to plain responses

    def lengths(self, rows: list[dict[str, Any]]) -> list[tuple[int, int] | str]:
        """(prompt tokens, longest prompt+response tokens) per row; a string instead where the chat
        template refuses the row (e.g. roles out of order).

        Speed: the prompt is tokenized once per row and each response on its own, batched; so a
        count can differ from TRL's by a token where BPE merges across the prompt/response boundary
        (never for chat templates, whose turns end in special tokens). A rendered prompt that is not
        a prefix of the rendered conversation is tokenized whole, exactly as TRL does.
        """
        import jinja2

        jobs: dict[bool, list[str]] = {True: [], False: []}  # add_special_tokens -> strings

        def job(text: str, special: bool) -> tuple[bool, int]:
            jobs[special].append(text)
            return special, len(jobs[special]) - 1

        plans: list[tuple[Any, list[tuple[str, Any]]] | str] = []
        for row in rows:
            try:
                prompt, fulls, chat = self._pieces(row)
            except (jinja2.TemplateError, TypeError, KeyError) as err:
                plans.append(f"the chat template refuses this conversation: {err}")
                continue
            first = job(prompt, not chat) if prompt else None
            parts = []
            for full in fulls:
                if prompt and full.startswith(prompt):
                    parts.append(("suffix", job(full[len(prompt):], False)))
                else:
                    parts.append(("whole", job(full, not chat)))
            plans.append((first, parts))
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)  # no offsets: ~10% faster
        encoded = {special: encode(texts, add_special_tokens=special) if texts else [] for special, texts in jobs.items()}
        out: list[tuple[int, int] | str] = []
        for plan in plans:
            if isinstance(plan, str):
                out.append(plan)
                continue
            first, parts = plan
            prompt_ids = encoded[first[0]][first[1]].ids if first else []
            prompt_len, longest = len(prompt_ids), 0
            for kind, (special, index) in parts:
                ids = encoded[special][index].ids
                if kind == "suffix":
                    longest = max(longest, len(prompt_ids) + len(ids))
                else:
                    prompt_len = min(prompt_len, _common_prefix(prompt_ids, ids))
                    longest = max(longest, len(ids))
            out.append((prompt_len, longest))
        return out

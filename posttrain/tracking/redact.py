"""Make configs safe and valid to log: secrets redacted, nested keys flattened, names and lengths
within MLflow's limits. Pure functions, no mlflow import (also used by dry runs and tests).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from typing import Any

REDACTED = "***"
# A key is secret when its last word is one of these (`hub_token`, `HF_TOKEN`, `api-key`, `password`),
# or it contains one of SECRET_PARTS anywhere. `pad_token_id`, `max_new_tokens`, `tokenizer` are not.
SECRET_WORDS = frozenset({"token", "password", "passwd", "pwd", "secret", "key", "apikey", "credential",
                          "credentials", "auth", "authorization", "cookie"})
SECRET_PARTS = ("password", "secret", "api_key", "apikey", "access_key", "private_key", "credential")
ENV_KEYS = frozenset({"env", "environ", "environment", "env_vars", "secrets"})  # every value below is checked
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<password>[^@/\s]+)@")
_ASSIGNMENT = re.compile(r"^(?P<name>[+~]*[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>.+)$")  # also Hydra's ++key=v
_TOKEN_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,})\b")

# MLflow's limits (mlflow.utils.validation, MLflow 3.x); kept here so nothing imports mlflow to plan.
MAX_PARAM_VALUE = 6000
MAX_KEY = 250
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- :]")


def is_secret_key(key: str) -> bool:
    """`hub_token`, `WANDB_API_KEY`, `db.password`, `client_secret`: yes. `pad_token_id`: no."""
    lowered = str(key).lower()
    if any(part in lowered for part in SECRET_PARTS):
        return True
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(key)).lower()) if w]
    return bool(words) and words[-1] in SECRET_WORDS


def redact_value(value: str) -> str:
    """Secrets inside a string: a URL's password, `NAME=value` with a secret NAME, known token shapes."""
    value = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)
    if (m := _ASSIGNMENT.match(value)) and is_secret_key(m["name"].lstrip("+~")):
        return f"{m['name']}={REDACTED}"
    return _TOKEN_VALUE.sub(REDACTED, value)


def redact(value: Any, key: str = "", env_like: bool = False) -> Any:
    """A copy of `value` with every secret-looking entry replaced by `***` (see is_secret_key).

    Under an env-like mapping (`launcher.env`) every string value is also checked for `NAME=value`
    and token shapes, since environment variables are where credentials usually travel.
    """
    if isinstance(value, dict):
        inner_env = env_like or str(key).lower() in ENV_KEYS
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v, k, inner_env))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, key, env_like) for v in value]
    if isinstance(value, str):
        return redact_value(value)
    return value


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{'trainer': {'beta': 0.1}, 'data': {'sources': [{'path': p}]}}` -> `trainer.beta`,
    `data.sources.0.path`. A list of plain values stays one entry (`peft.target_modules`)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and not _scalar_list(value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: value}


def mlflow_name(name: str) -> str:
    """A param, metric or tag key MLflow accepts: allowed characters, no path tricks, <= 250 chars."""
    name = _BAD_NAME_CHARS.sub("_", str(name))
    name = re.sub(r"/+", "/", name).strip("/") or "_"
    if posixpath.normpath(name) != name:  # `a/./b`, `a/../b`: MLflow stores names as file paths
        name = name.replace(".", "_")
    if len(name) > MAX_KEY:
        suffix = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_KEY - 9]}~{suffix}"
    return name


def param_value(value: Any, limit: int = MAX_PARAM_VALUE) -> str:
    """The string MLflow stores; a longer value is cut with a note (the full config is an artifact)."""
    text = "null" if value is None else str(value)
    if len(text) <= limit:
        return text
    note = f"... [truncated from {len(text)} chars; see the config artifact]"
    return text[: limit - len(note)] + note


def loggable_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flattened, redacted, MLflow-safe params of a config mapping."""
    flat = flatten(redact(config), prefix)
    return {mlflow_name(k): param_value(v) for k, v in flat.items() if k}

"""Plan-time checks of model references: what a stage will load must be there, before anything runs.

A local folder must be a Hugging Face model dir (config.json and weights; a tokenizer where the
stage loads one); a hub id is looked up in the local Hugging Face cache (read from its layout,
`models--org--name/refs/<revision>` -> `snapshots/<commit>/`, without importing transformers or
huggingface_hub's download stack) and, under HF_HUB_OFFLINE=1, must be there at the revision
asked for; a `model.chat_template` file must exist and parse as Jinja. Online, a hub id that is
not cached is left to the stage (it downloads it). GGUF files are checked where they are read.
"""

from __future__ import annotations

import os
from pathlib import Path

from posttrain.names import quoted

WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.msgpack", "*.gguf", "*.safetensors.index.json",
           "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of boolean variables


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def hub_cache() -> Path:
    """The hub cache folder, resolved as huggingface_hub.constants does (read now, not at import)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _repo_folder(repo_id: str) -> Path:
    return hub_cache() / ("models--" + repo_id.replace("/", "--"))


def cached_revisions(repo_id: str) -> list[str]:
    """Branch/tag names and commits of `repo_id` in the local cache."""
    folder = _repo_folder(repo_id)
    refs = [p.relative_to(folder / "refs").as_posix() for p in (folder / "refs").rglob("*") if p.is_file()]
    commits = [p.name for p in (folder / "snapshots").glob("*") if p.is_dir()]
    return sorted(refs) + sorted(commits)


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot folder of `repo_id` at `revision` (default main), or None."""
    folder = _repo_folder(repo_id)
    revision = revision or "main"
    ref = folder / "refs" / revision
    try:
        commit = ref.read_text().strip() if ref.is_file() else revision
    except OSError:
        return None
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _has_weights(folder: Path) -> bool:
    return any(p.is_file() for pattern in WEIGHTS for p in folder.glob(pattern))


def local_model_problems(where: str, folder: Path, needs_tokenizer: bool) -> list[str]:
    if not folder.is_dir():
        if folder.suffix.lower() == ".gguf":
            return []  # a GGUF file: its reader checks it
        return [f"{where}: {quoted(folder)} is a file, not a model folder; give the folder holding config.json"]
    if not (folder / "config.json").is_file():
        return [f"{where}: {quoted(folder)} has no config.json, so it is not a Hugging Face model folder; "
                f"point it at the folder saved by save_pretrained (config.json and weights) or a hub id"]
    problems = []
    if not _has_weights(folder):
        problems.append(f"{where}: {quoted(folder)} has a config.json but no weights (*.safetensors, *.bin); "
                        f"was the model saved completely?")
    if needs_tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"{where}: {quoted(folder)} has no tokenizer ({', '.join(TOKENIZER_FILES[:2])}, ...); "
                        f"save the tokenizer beside the model (tokenizer.save_pretrained)")
    return problems


def hub_model_problems(where: str, repo_id: str, revision: str | None) -> list[str]:
    """Under HF_HUB_OFFLINE=1 the stage can only load what the local cache holds."""
    if not offline():
        return []
    snapshot = cached_snapshot(repo_id, revision)
    at = f" at revision {quoted(revision)}" if revision else ""
    if snapshot is None:
        known = cached_revisions(repo_id)
        cached = f" (cached revisions: {', '.join(known)})" if known else ""
        return [f"{where}: hub id {quoted(repo_id)}{at} is not in the local Hugging Face cache ({hub_cache()}){cached}, "
                f"and HF_HUB_OFFLINE=1 forbids downloading it; download it first "
                f"(`hf download {repo_id}`{f' --revision {revision}' if revision else ''}) or unset HF_HUB_OFFLINE"]
    if not (snapshot / "config.json").is_file():
        return [f"{where}: the cached copy of {quoted(repo_id)}{at} has no config.json ({snapshot}); download it "
                f"completely or unset HF_HUB_OFFLINE"]
    return []


def model_problems(where: str, path: str, revision: str | None = None, needs_tokenizer: bool = True) -> list[str]:
    """Problems of a model a stage will load by `path` (a local dir or a hub id) at `revision`."""
    local = Path(path).expanduser()
    if local.exists():
        problems = local_model_problems(where, local, needs_tokenizer)
        if revision:
            problems.append(f"{where}: revision {quoted(revision)} applies to hub ids; {quoted(path)} is a local "
                            f"folder and would be loaded as it is (remove `revision`)")
        return problems
    return hub_model_problems(where, path, revision)


def tokenizer_problems(where: str, path: str, revision: str | None = None) -> list[str]:
    local = Path(path).expanduser()
    if local.is_dir():
        if any((local / name).is_file() for name in TOKENIZER_FILES):
            return []
        return [f"{where}: {quoted(path)} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)"]
    if local.exists():
        return [f"{where}: {quoted(path)} is a file; give the folder holding the tokenizer"]
    return hub_model_problems(where, path, revision)


def chat_template_problems(where: str, path: str) -> list[str]:
    """The file exists, is UTF-8 and compiles the way transformers compiles chat templates."""
    from posttrain.data.tokens import compile_chat_template

    file = Path(path).expanduser()
    if not file.is_file():
        return [f"{where}: no such file {quoted(path)} (a .jinja chat template)"]
    try:
        source = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        return [f"{where}: {quoted(path)} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"]
    except OSError as err:
        return [f"{where}: cannot read {quoted(path)}: {err.strerror}"]
    try:
        compile_chat_template(source)
    except Exception as err:  # noqa: BLE001 - jinja2's TemplateSyntaxError and friends
        line = getattr(err, "lineno", None)
        return [f"{where}: {quoted(path)} is not a valid Jinja template ({f'line {line}: ' if line else ''}{err})"]
    return []

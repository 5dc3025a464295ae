"""Model references checked at plan time for what the stage will load: folders, hub ids in the local
cache under HF_HUB_OFFLINE=1 (with revision), chat template files."""

from __future__ import annotations

import json

import pytest

from workflows.config import compose
from workflows.planning import PlanError, build_plan


def problems(*overrides: str) -> list[str]:
    with pytest.raises(PlanError) as err:
        build_plan(compose(["+pipeline=sft_dpo", "tracking=none", *overrides]))
    return err.value.problems


def fake_cache(root, repo: str, ref: str = "main", commit: str = "abc123", files=("config.json",)):
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / ref).write_text(commit)
    for name in files:
        (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (folder / "snapshots" / commit / name).write_text("{}")
    return folder


def test_model_references_that_cannot_load_are_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    fake_cache(tmp_path / "hub", "org/cached")
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "llama"}))
    broken_template = tmp_path / "broken.jinja"
    broken_template.write_text("{% for m in messages %}{{ m.content }")
    found = problems("model=hf", "model.name_or_path=org/missing", f"stages.dpo.reference={no_config}",
                     f"stages.eval.models=[checkpoint,sft,{no_weights},hf:gpt9]",
                     f"model.chat_template={tmp_path / 'nope.jinja'}")
    expected = [
        "model.name_or_path: hub id 'org/missing' is not in the local Hugging Face cache",
        f"stages.dpo.reference: '{no_config}' has no config.json, so it is not a Hugging Face model folder",
        f"stages.eval.models[2]: '{no_weights}' has a config.json but no weights",
        "stages.eval.models[3]: hub id 'gpt9' is not in the local Hugging Face cache",
        f"model.chat_template: no such file '{tmp_path / 'nope.jinja'}'",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in found[0]
    [msg] = problems("model=hf", "model.name_or_path=org/cached", "model.revision=v2")
    assert msg.startswith("model.name_or_path: hub id 'org/cached' at revision 'v2' is not in the local Hugging "
                          "Face cache") and "(cached revisions: main, abc123)" in msg, msg
    [msg] = problems(f"model.chat_template={broken_template}")
    assert msg.startswith(f"model.chat_template: '{broken_template}' is not a valid Jinja template (line 1"), msg
    plan = build_plan(compose(["+pipeline=sft_dpo", "tracking=none", "model=hf", "model.name_or_path=org/cached",
                               "model.revision=main"]))
    assert plan.stage("sft").spec.policy.path == "org/cached"
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online: an uncached id is the stage's to download
    build_plan(compose(["+pipeline=sft_dpo", "tracking=none", "model=hf", "model.name_or_path=org/missing"]))


def test_a_corrupt_tokenizer_is_named_before_anything_runs(tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (corrupt / name).write_text("not what it claims to be")
    found = problems(f"stages.sft.policy={corrupt}", "stages.dpo.enabled=false", "stages.eval.enabled=false")
    assert found == [f"stages.sft: the tokenizer in '{corrupt}' cannot be read (expected ident at line 1 column 2); "
                     "save it again with tokenizer.save_pretrained"], found

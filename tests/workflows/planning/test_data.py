"""Plan-time data validation (workflows/planning/data.py): every broken row is named by file, row and
reason before any compute, for every stage at once, and the results are cached by content.

tests/data/broken/ holds one problem per file; next to each, `<file>.expected` gives its format,
optional overrides and the text the problem must contain.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from posttrain.data.check import display_path
from tests.conftest import ROOT, run_cli
from workflows.config import compose
from workflows.planning import PlanError, build_plan

BROKEN = sorted(p for p in (ROOT / "tests" / "data" / "broken").iterdir() if p.suffix in (".jsonl", ".json", ".csv"))
STAGE_FOR_FORMAT = {"preference": ("sft_dpo", "dpo"), "unpaired_preference": ("sft_kto", "kto")}  # else sft


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Validation results are cached by content; a private cache keeps these tests independent."""
    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "posttrain_cache"))


def problems(*overrides: str, pipeline: str = "sft_dpo") -> list[str]:
    with pytest.raises(PlanError) as err:
        build_plan(compose([f"+pipeline={pipeline}", *overrides]))
    return err.value.problems


def use(stage: str, path: Path | str, fmt: str) -> list[str]:
    """Overrides that make `stage` train on one file of format `fmt`."""
    return [f"stages.{stage}.data.format={fmt}", f"stages.{stage}.data.sources.0.path={path}",
            f"stages.{stage}.data.eval_sources=[]"]


def expected(path: Path) -> tuple[str, list[str], list[str]]:
    fields: dict[str, list[str]] = {"format": [], "override": [], "expect": []}
    for line in Path(f"{path}.expected").read_text().splitlines():
        key, _, value = line.partition(": ")
        fields[key].append(value)
    return fields["format"][0], fields["override"], fields["expect"]


def test_every_broken_file_has_its_expectation():
    assert len(BROKEN) >= 20
    assert all(Path(f"{p}.expected").is_file() for p in BROKEN)


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_broken_file_is_rejected_with_its_file_row_and_reason(path):
    fmt, overrides, expects = expected(path)
    pipeline, stage = STAGE_FOR_FORMAT.get(fmt, ("sft_dpo", "sft"))
    found = problems(*use(stage, path, fmt), *overrides, pipeline=pipeline)
    assert len(found) == 1, found  # one problem per file, reported once
    [message] = found
    assert message.startswith(f"stages.{stage}.data: {display_path(path)} row"), message
    for text in expects:
        assert text in message, message
    assert message.endswith(f"; fix the rows or set stages.{stage}.data.on_invalid=drop to skip them")


def test_problems_of_every_stage_are_reported_at_once():
    broken = ROOT / "tests" / "data" / "broken"
    found = problems(*use("sft", broken / "text_empty.jsonl", "text"),
                     *use("dpo", broken / "preference_identical.jsonl", "preference"),
                     "stages.dpo.trainer.bta=0.2")
    assert len(found) == 3
    assert any("text_empty.jsonl row 2: 'text' is empty" in p for p in found)
    assert any("preference_identical.jsonl row 1: 'chosen' and 'rejected' are identical" in p for p in found)
    assert any(p.startswith("stages.dpo.trainer.bta") for p in found)


def test_cli_stops_with_exit_code_2_and_no_traceback(tmp_path):
    proc = run_cli("+pipeline=sft_dpo", f"run_dir={tmp_path / 'run'}",
                   *use("dpo", ROOT / "tests/data/broken/preference_chosen_empty.jsonl", "preference"),
                   env={"POSTTRAIN_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2
    assert "row 2: 'chosen' message 1 (assistant) is empty" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoint").exists()  # nothing ran


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def test_duplicates_across_formats_and_eval_rows_seen_in_training(tmp_path):
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "copy", "input": "xy", "output": "xy"},
                                                 {"instruction": "len", "input": "abc", "output": "3"}])
    messages = write_jsonl(tmp_path / "m.jsonl", [chat("copy\n\nxy", "xy"), chat("copy: zz", "zz")])
    held_out = write_jsonl(tmp_path / "e.jsonl", [chat("copy: zz", "zz"), chat("copy: qq", "qq")])
    found = problems("stages.sft.data.format=messages", f"stages.sft.data.sources=[{{path: {alpaca}, format: alpaca}},"
                     f"{{path: {messages}}}]", f"stages.sft.data.eval_sources=[{{path: {held_out}}}]")
    assert found == [
        (f"stages.sft.data: {display_path(messages)} row 1 (= {display_path(alpaca)} row 1): exact duplicate of a row "
         "of another source; fix the rows or set stages.sft.data.on_invalid=drop to skip them"),
        (f"stages.sft.data: {display_path(held_out)} row 1 (= {display_path(messages)} row 2): also in the training "
         "data (eval would measure memorisation); fix the rows or set stages.sft.data.on_invalid=drop to skip them"),
    ]


def test_a_stage_cannot_mix_conversations_with_plain_strings(tmp_path):
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": "Q: copy: ab\nA: ab"}])
    found = problems("stages.sft.data.format=messages", "stages.sft.data.eval_sources=[]",
                     f"stages.sft.data.sources=[{{path: {ROOT / 'data/formats/alpaca.jsonl'}, format: alpaca}},"
                     f"{{path: {text}, format: text}}]")
    assert len(found) == 1 and "mixes conversations" in found[0] and "t.jsonl" in found[0]


def test_a_source_format_the_stage_does_not_take(tmp_path):
    found = problems("stages.dpo.data.sources.0.format=messages")
    assert found == ["stages.dpo.data.sources[0].format: a dpo stage takes preference data, not 'messages'"]


def test_conversations_need_a_chat_template(tmp_path):
    tokenizer = tmp_path / "tok"
    shutil.copytree(ROOT / "demo/tiny_tokenizer", tokenizer)
    (tokenizer / "chat_template.jinja").unlink()
    found = problems(f"model.tokenizer={tokenizer}")
    assert any("conversational data needs a chat template" in p and "model.chat_template" in p for p in found)
    build_plan(compose(["+pipeline=sft_dpo", f"model.tokenizer={tokenizer}",  # a template given in config suffices
                        f"model.chat_template={ROOT / 'demo/tiny_tokenizer/chat_template.jinja'}"]))


def test_assistant_only_loss_without_generation_markers_trains_the_last_turn(tmp_path):
    template = tmp_path / "plain.jinja"
    template.write_text("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
                        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    plan = build_plan(compose(["+pipeline=sft_dpo", f"model.chat_template={template}"]))
    assert any("no {% generation %} markers: the loss covers each conversation's last assistant turn" in n
               for n in plan.stage("sft").notes)
    marked = build_plan(compose(["+pipeline=sft_dpo"]))  # the demo template has markers: every assistant turn
    assert not any("generation %} markers" in n for n in marked.stage("sft").notes)


def test_long_rows_are_counted_and_the_truncation_explained():
    plan = build_plan(compose(["+pipeline=sft_dpo_kto", "stages.sft.trainer.max_length=18",
                               "stages.dpo.trainer.max_length=20", "stages.kto.trainer.max_length=18"]))
    sft, dpo, kto = (" ".join(plan.stage(n).notes) for n in ("sft", "dpo", "kto"))
    assert "are longer than max_length=18 tokens" in sft
    assert "SFTTrainer truncates them to the first 18 tokens, so the end of the response" in sft
    assert "DPOTrainer truncates prompt+chosen and prompt+rejected to the first 20 tokens" in dpo
    assert "KTOTrainer truncates prompt+completion to the first 18 tokens" in kto


def test_hub_sources_and_hub_tokenizers_are_named_not_guessed(monkeypatch):
    plan = build_plan(compose(["+pipeline=sft_dpo", "stages.dpo.data.sources.0.path=someorg/some-prefs",
                               "stages.dpo.data.eval_sources=[]"]))
    [note] = plan.stage("dpo").notes
    assert "hub dataset 'someorg/some-prefs' is not readable at plan time; dpo checks it before training" in note
    assert "pin `revision`" in note
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online, an uncached hub model is the stage's to download
    plan = build_plan(compose(["+pipeline=sft_dpo", "model=hf", "model.name_or_path=someorg/some-model"]))
    assert "length check skipped: tokenizer 'someorg/some-model' is not a local folder" in plan.stage("sft").notes[0]


def test_validation_is_cached_by_content(tmp_path, monkeypatch):
    import workflows.planning.data as planning_data

    source = write_jsonl(tmp_path / "s.jsonl", [chat(f"copy: {w}", w) for w in ("ab", "cd")])
    reads = []
    real = planning_data.iter_rows
    monkeypatch.setattr(planning_data, "iter_rows", lambda path: reads.append(path) or real(path))
    overrides = ["+pipeline=sft_dpo", *use("sft", source, "messages")]
    build_plan(compose(overrides))
    build_plan(compose(overrides))
    assert reads == [source]  # the second plan read nothing
    write_jsonl(source, [chat("copy: ab", "ab"), chat("copy: cd", "")])
    with pytest.raises(PlanError, match="row 2: 'messages' message 2 \\(assistant\\) is empty"):
        build_plan(compose(overrides))


def test_max_length_auto_is_measured_with_the_policys_tokenizer_and_printed():
    plan = build_plan(compose(["+pipeline=sft_dpo", "tracking=none", "stages.sft.trainer.max_length=auto",
                               "stages.dpo.trainer.max_length=auto"]))
    for name in ("sft", "dpo"):
        stage = plan.stage(name)
        chosen = stage.spec.trainer["max_length"]
        assert isinstance(chosen, int) and chosen % 8 == 0 and 16 <= chosen <= 64  # tiny model: context 64
        assert stage.notes[0].startswith(f"max_length auto = {chosen} tokens: ") and "99th percentile" in stage.notes[0]
        assert not any("longer than max_length" in n for n in stage.notes)  # the demo's rows all fit


def test_max_length_auto_is_capped_at_the_models_context_length():
    from posttrain.data.check import SourceCheck
    from workflows.planning.data import choose_max_length

    check = SourceCheck("s.jsonl", "messages", "messages", lengths=[[10, 20]] * 98 + [[90, 100], [150, 300]])
    assert choose_max_length([check], None)[0] == 160  # the longest prompt + 8, rounded up to 8
    chosen, note = choose_max_length([check], 128)
    assert chosen == 128 and note.endswith("capped at the model's context length 128")
    assert choose_max_length([SourceCheck("s", "messages", "messages")], 128) is None

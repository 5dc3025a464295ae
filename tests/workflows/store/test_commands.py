"""`posttrain store ls|gc` (workflows/store/commands.py): gc removes only what nothing uses."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

from tests.workflows.state.test_decide import finish, plan_for
from workflows.cli import main as posttrain
from workflows.state.lock import hold_entry
from workflows.store.layout import Store


def store() -> Path:
    return Path(os.environ["POSTTRAIN_STORE_DIR"]).resolve()


def listing(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert posttrain(["store", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _hold(lock: str, ready, release) -> None:
    hold_entry(Path(lock), exclusive=False)  # a run using the entry (or a stage reading it)
    ready.set()
    release.wait(30)


def test_gc_removes_only_entries_no_run_dir_links_to_and_no_run_holds(tmp_path, data, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    finish(plan_for(a, data))
    old_dpo = plan_for(a, data).stage("dpo").stage_dir
    finish(plan_for(a, data, "stages.dpo.trainer.beta=0.3"), "dpo")  # a now links another DPO entry
    b_plan = plan_for(b, data, "stages.dpo.trainer.beta=0.3", "stages.kto.trainer.beta=0.3")
    finish(b_plan, "kto")  # b shares every stage with a (now) but its KTO
    held = plan_for(tmp_path / "c", data, "stages.sft.trainer.learning_rate=1e-4")
    finish(held, "sft")
    held_sft = held.stage("sft").stage_dir
    shutil.rmtree(tmp_path / "c")  # no run_dir links to it any more, but a run still holds it:
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(Store.of(str(store())).lock_file(Path(held_sft))), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        before = listing(capsys, "ls")
        by_path = {e["path"]: e for e in before["entries"]}
        assert by_path[old_dpo]["run_dirs"] == [] and by_path[held_sft]["busy"]
        sft = by_path[plan_for(a, data).stage("sft").stage_dir]
        assert {r["run_dir"] for r in sft["run_dirs"]} == {str(a), str(b)} and sft["stages"] == ["sft"]

        dry = listing(capsys, "gc")
        verdicts = {e["path"]: e["gc"] for e in dry["entries"]}
        unused = {old_dpo, held.stage("dpo").stage_dir, held.stage("kto").stage_dir}  # c's never trained
        assert {p for p, v in verdicts.items() if v == "remove"} == unused
        assert verdicts[held_sft] == "keep: a run holds it"
        assert Path(old_dpo).exists()  # a dry run removes nothing

        done = listing(capsys, "gc", "--delete")
        assert done["freed_bytes"] > 0 and not any(Path(p).exists() for p in unused) and Path(held_sft).exists()
    finally:
        release.set()
        holder.join(30)
    remaining = {e["path"] for e in listing(capsys, "ls")["entries"]}
    for run_dir in (a, b):  # every stage a run_dir links to is still there, whole
        for link in run_dir.iterdir():
            if link.is_symlink():
                assert os.path.realpath(link) in remaining and (link / "manifest.json").exists()

    b_kto = b_plan.stage("kto").stage_dir
    shutil.rmtree(b)  # a deleted run_dir holds nothing any more
    done = listing(capsys, "gc", "--delete")
    assert not Path(b_kto).exists() and not Path(held_sft).exists()  # released by its run meanwhile
    assert done["forgotten_run_dirs"] == [str(b)]
    assert Store.of(str(store())).run_dirs() == [str(a)]


def test_ls_and_gc_print_tables_and_refuse_a_missing_store(tmp_path, data, capsys):
    finish(plan_for(tmp_path / "a", data))
    assert posttrain(["store", "ls"]) == 0
    out = capsys.readouterr().out
    assert "4 entries" in out and "stage" in out and "fingerprint" in out and "run_dirs" in out
    assert posttrain(["store", "gc"]) == 0
    assert "dry run: would remove 0 of 4 entries" in capsys.readouterr().out
    assert posttrain(["store", "ls", str(tmp_path / "nowhere")]) == 2
    assert "error: no store at" in capsys.readouterr().err

"""Names by one rule (posttrain/names.py) under every launcher, quoted safely; run_dir must be a folder."""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from workflows.config import compose
from workflows.planning import PlanError, build_plan
from workflows.planning.places import name_problems

BAD_NAMES = ["../../x", "a/b", "two\nlines", "-rf", "", ".hidden", "x" * 65, "tab\there", "semi;colon", "a.b"]


def config(launcher: str) -> dict:
    return OmegaConf.to_container(compose(["+pipeline=sft_dpo", "tracking=none", f"launcher={launcher}"]),
                                  resolve=True)


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_stage_and_pipeline_names_are_identifiers_on_every_launcher(launcher, tmp_path):
    cfg = config(launcher)
    cfg["run_dir"] = str(tmp_path / "run")
    for bad in BAD_NAMES:  # every bad name at once, as a stage (a copy of dpo)
        cfg["stages"][bad] = copy.deepcopy(cfg["stages"]["dpo"])
    cfg["name"] = "two\nlines"
    with pytest.raises(PlanError) as err:
        build_plan(cfg)
    message = str(err.value)
    for bad in BAD_NAMES:
        shown = repr(bad)[1:-1]
        assert f"stages['{shown}']: '{shown}' is not a valid stage name (1 to 64 letters, digits" in message, shown
    assert "name: 'two\\nlines' is not a valid pipeline name" in message
    assert message.startswith("Pipeline 'two\\nlines' is not well-formed")
    assert all(line.startswith(("Pipeline", "  - ")) for line in message.splitlines()), message  # no forged line
    assert not (tmp_path / "run").exists()  # planning wrote nothing, inside run_dir or out of it
    for bad in BAD_NAMES:
        assert name_problems({"name": bad, "stages": {}}), bad
    assert not name_problems({"name": "sft_dpo-v2", "stages": {"sft": {}, "dpo_2": {}, "7b-kto": {}}})


def test_run_dir_must_be_a_folder_it_can_write(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("not a folder")
    base = config("local")
    for run_dir, expected in [(file, "is a file, not a folder"), (file / "below", "cannot be created"),
                              (str(tmp_path / "line\nbreak"), "contains a line break or control character")]:
        cfg = copy.deepcopy(base)
        cfg["run_dir"] = str(run_dir)
        with pytest.raises(PlanError) as err:
            build_plan(cfg)
        assert any(p.startswith("run_dir ") and expected in p for p in err.value.problems), err.value.problems
    assert file.read_text() == "not a folder"

"""Names by one rule (posttrain/names.py) under every launcher, quoted safely; run_dir must be a folder."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from workflows.config import compose
from workflows.planning import PlanError, build_plan

BAD_NAMES = ["../../x", "a/b", "two\nlines", "-rf", "", ".hidden", "x" * 65, "tab\there", "semi;colon"]


def config(launcher: str) -> dict:
    return OmegaConf.to_container(compose(["+pipeline=sft_dpo", "tracking=none", f"launcher={launcher}"]),
                                  resolve=True)


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_stage_and_pipeline_names_are_identifiers_on_every_launcher(launcher, tmp_path):
    for bad in BAD_NAMES:
        cfg = config(launcher)
        cfg["run_dir"] = str(tmp_path / "run")
        cfg["stages"][bad] = cfg["stages"].pop("dpo")
        cfg["stages"]["eval"]["models"] = ["checkpoint", "sft"]
        cfg["name"] = bad
        with pytest.raises(PlanError) as err:
            build_plan(cfg)
        message = str(err.value)
        shown = repr(bad)[1:-1]
        assert f"name: '{shown}' is not a valid pipeline name (1 to 64 letters, digits" in message, message
        assert f"stages['{shown}']: '{shown}' is not a valid stage name" in message, message
        assert all(line.startswith(("error", "Pipeline", "  - ")) for line in message.splitlines()), message
        assert not (tmp_path / "run").exists()  # planning wrote nothing, inside run_dir or out of it


def test_run_dir_must_be_a_folder_it_can_write(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("not a folder")
    for run_dir, expected in [(file, "is a file, not a folder"), (file / "below", "cannot be created"),
                              (str(tmp_path / "line\nbreak"), "contains a line break or control character")]:
        cfg = config("local")
        cfg["run_dir"] = str(run_dir)
        with pytest.raises(PlanError) as err:
            build_plan(cfg)
        assert any(p.startswith("run_dir ") and expected in p for p in err.value.problems), err.value.problems
    assert file.read_text() == "not a folder"

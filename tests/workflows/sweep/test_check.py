"""workflows/sweep/check.py: a `-m` sweep plans every variant before the first one runs, so a bad
value in a later variant is refused before any compute; variants are numbered as Hydra numbers them."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from tests.conftest import run_cli
from workflows.sweep.check import variant_overrides

SWEEP = ["stages.dpo.trainer.beta=0.1,-1", "stages.sft.trainer.max_steps=10,-5"]


def test_a_bad_value_in_any_variant_stops_the_sweep_before_the_first_runs(tmp_path: Path):
    result = run_cli("-m", "+pipeline=sft_dpo", "tracking=none", *SWEEP, f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     f"store_dir={tmp_path / 'store'}", timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    err = result.stderr
    assert "error: 3 of the sweep's variants cannot run as configured; none was started:" in err
    lines = {int(m.group(1)): m.group(2) for m in re.finditer(r"^  variant #(\d+) \(([^)]*)\):", err, re.M)}
    assert lines == {1: "stages.dpo.trainer.beta=0.1 stages.sft.trainer.max_steps=-5",
                     2: "stages.dpo.trainer.beta=-1 stages.sft.trainer.max_steps=10",
                     3: "stages.dpo.trainer.beta=-1 stages.sft.trainer.max_steps=-5"}
    assert err.count("stages.dpo.trainer.beta: -1 is out of range") == 2
    assert err.count("stages.sft.trainer.max_steps: -5 trains no step") == 2
    assert "Traceback" not in err and "Launching" not in result.stdout + err  # Hydra never launched a job
    assert not (tmp_path / "store").exists() and not (tmp_path / "sweep").exists()  # nothing trained or written


def test_variants_are_numbered_as_hydra_numbers_its_jobs(tmp_path: Path):
    overrides = ["+pipeline=sft_dpo", "tracking=none", "dry_run=true", "stages.dpo.trainer.beta=0.1,0.2",
                 "stages.sft.trainer.max_steps=10,20"]
    result = run_cli("-m", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}", f"store_dir={tmp_path / 'store'}",
                     timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    launched = dict(re.findall(r"\[HYDRA\]\s+#(\d+) : (.*)", result.stdout + result.stderr))
    jobs, swept = variant_overrides(OmegaConf.create({"hydra": {"sweeper": {"params": None},
                                                                "overrides": {"task": overrides}}}))
    assert swept == ["stages.dpo.trainer.beta", "stages.sft.trainer.max_steps"] and len(jobs) == len(launched) == 4

    def values(job: list[str]) -> dict[str, str]:  # the swept keys' values (Hydra prints `++key=value`)
        pairs = (o.split("=", 1) for o in job)
        return {key.lstrip("+"): value for key, value in pairs if key.lstrip("+") in swept}

    assert [values(launched[str(n)].split()) for n in range(4)] == [values(job) for job in jobs]
    assert len({tuple(values(job).values()) for job in jobs}) == 4

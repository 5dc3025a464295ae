"""Sweeps that share work, for real (tiny model, few steps): a `-m` sweep trains its shared SFT once
and keeps every DPO variant; a re-run starts nothing; another pipeline reuses the SFT; two
invocations racing for the same missing stage train it once. Stage processes are counted from the
outside (bench/observer/sitecustomize.py leaves a file per stage process it sees start)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_summary, run_cli
from workflows.config import compose
from workflows.planning import build_plan
from workflows.state.decide import decide
from workflows.state.lock import hold_entry, release_entry
from workflows.store.layout import Store

pytestmark = pytest.mark.slow
OBSERVER = ROOT / "bench" / "observer"


def lean(tmp: Path, pipeline: str) -> list[str]:
    """`pipeline` with only checkpoint, sft and its preference stage, few rows and steps, no eval split."""
    stages = compose([f"+pipeline={pipeline}"]).stages
    keep = [n for n in ("sft", "dpo", "kto") if n in stages]
    out = [f"+pipeline={pipeline}", "tracking=none", *[f"stages.{n}.enabled=false" for n in stages if n not in keep]]
    for name in keep:
        source = Path(stages[name].data.sources[0].path)
        copy = tmp / "data" / source.name  # private: a re-run must find the bytes unchanged
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
        out += [f"stages.{name}.data.sources.0.path={copy}", f"stages.{name}.data.sources.0.max_rows=48",
                f"stages.{name}.data.eval_sources=[]", f"stages.{name}.trainer.max_steps={4 if name == 'sft' else 3}",
                f"stages.{name}.trainer.logging_steps=1"]
    return out


def observed(folder: Path) -> list[str]:
    """The stage type of every stage process started while `folder` was observed."""
    return sorted(p.read_text().split()[0] for p in folder.glob("*.start"))


def watch(folder: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{OBSERVER}{os.pathsep}{ROOT}", "POSTTRAIN_BENCH_OBSERVE": str(folder)}


class Racer:
    """A `workflows.run` process whose output is collected as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.output = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output += line

    def finish(self) -> tuple[str, int]:
        code = self.proc.wait(timeout=900)
        self.reader.join(30)
        return self.output, code


def weights_digest(model_dir: Path) -> str:
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, tensor in sorted(load_file(str(model_dir / "model.safetensors")).items()):
        h.update(name.encode() + tensor.float().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("sweeps")
    out: dict = {"tmp": tmp}
    sweep = [*lean(tmp, "sft_dpo"), "stages.dpo.trainer.beta=0.05,0.2"]
    for step in ("sweep", "again"):
        out[step] = run_cli("-m", *sweep, f"hydra.sweep.dir={tmp / step}", env=watch(tmp / f"{step}-seen"),
                            timeout=900)
        out[f"{step}-seen"] = observed(tmp / f"{step}-seen")
    # Two invocations of another pipeline with the same SFT, at once, both needing its missing KTO
    # stage. The test holds the KTO entry until both wait for it, so they race whatever the load.
    kto = decide(build_plan(compose([*lean(tmp, "sft_kto"), f"run_dir={tmp / 'kto-probe'}"]))).stage("kto")
    lock = Store.of(os.environ["POSTTRAIN_STORE_DIR"]).lock_file(Path(kto.stage_dir))
    hold_entry(lock, exclusive=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **watch(tmp / "race-seen")}
    racers = [Racer([sys.executable, "-m", "workflows.run", *lean(tmp, "sft_kto"), f"run_dir={tmp / f'kto-{i}'}"],
                    env) for i in range(2)]
    try:
        deadline = time.time() + 600
        while not all("waiting for" in r.output for r in racers) and time.time() < deadline:
            time.sleep(0.5)
    finally:
        release_entry(lock)
    out["race"] = [r.finish() for r in racers]
    out["race-seen"] = observed(tmp / "race-seen")
    return out


def test_a_two_variant_sweep_trains_sft_once_and_keeps_both_dpo_models(story):
    from transformers import AutoModelForCausalLM

    proc = story["sweep"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert story["sweep-seen"] == ["checkpoint", "dpo", "dpo", "sft"]  # stage processes started
    first, second = (read_summary(story["tmp"] / "sweep" / n) for n in ("0", "1"))  # a run_dir per variant
    assert {n: s["status"] for n, s in first.items()} == {"checkpoint": "completed", "sft": "completed",
                                                          "dpo": "completed"}
    assert {n: s["status"] for n, s in second.items()} == {"checkpoint": "cached", "sft": "cached",
                                                           "dpo": "completed"}
    assert first["sft"]["output_dir"] == second["sft"]["output_dir"]
    assert second["dpo"]["inputs"]["policy_init"] == first["sft"]["output_dir"]
    dpo = [Path(s["dpo"]["output_dir"]) for s in (first, second)]
    assert dpo[0] != dpo[1] and weights_digest(dpo[0]) != weights_digest(dpo[1])
    for model_dir in dpo:
        AutoModelForCausalLM.from_pretrained(model_dir)
    manifests = [json.loads((story["tmp"] / "sweep" / n / "dpo" / "manifest.json").read_text()) for n in ("0", "1")]
    assert [m["model_dir"] for m in manifests] == [str(d) for d in dpo]  # each run_dir's link shows its variant
    table = json.loads((story["tmp"] / "sweep" / "sweep.json").read_text())
    assert table["shared"] == ["checkpoint", "sft"]
    assert [v["overrides"] for v in table["variants"]] == [{"stages.dpo.trainer.beta": "0.05"},
                                                           {"stages.dpo.trainer.beta": "0.2"}]
    assert "stages.dpo.trainer.beta  0.05" in proc.stdout and "dpo.rewards/accuracies" in proc.stdout


def test_running_the_sweep_again_starts_no_stage_process(story):
    proc = story["again"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert story["again-seen"] == []
    for n in ("0", "1"):
        assert {s["status"] for s in read_summary(story["tmp"] / "again" / n).values()} == {"cached"}
        assert (read_summary(story["tmp"] / "again" / n)["dpo"]["output_dir"]
                == read_summary(story["tmp"] / "sweep" / n)["dpo"]["output_dir"])


def test_another_pipeline_reuses_the_sft_and_racing_invocations_train_kto_once(story):
    for output, code in story["race"]:
        assert code == 0, output[-3000:]
        assert "[kto] new" in output and "waiting for" in output  # both planned it missing, both waited...
    assert story["race-seen"] == ["kto"]  # ...one trained it: no checkpoint, no SFT, one KTO process
    summaries = [read_summary(story["tmp"] / f"kto-{i}") for i in range(2)]
    sft = read_summary(story["tmp"] / "sweep" / "0")["sft"]["output_dir"]
    assert all(s["sft"]["status"] == "cached" and s["sft"]["output_dir"] == sft for s in summaries)
    assert sorted(s["kto"]["status"] for s in summaries) == ["cached", "completed"]
    assert summaries[0]["kto"]["output_dir"] == summaries[1]["kto"]["output_dir"]
    reused = [output for output, _ in story["race"] if "kto: trained meanwhile by another run" in output]
    assert len(reused) == 1

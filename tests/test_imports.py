"""Imports flow one way (as torchtune's test_import_recipes checks for its recipes):

    posttrain (core)  <-  stages (stage processes)
    posttrain (core)  <-  workflows (orchestrator)

The core imports neither side, the stages never import the orchestrator, no module of the
project imports another in a circle, and the orchestrator never loads torch, transformers, TRL,
peft or DeepSpeed (checked in a fresh interpreter that plans a pipeline).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("posttrain", "workflows", "stages", "demo")
HEAVY = ("torch", "transformers", "trl", "peft", "deepspeed", "datasets", "mlflow")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at any level (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_core_imports_neither_the_orchestrator_nor_the_stages():
    bad = {m: sorted(i for i in imports if _top(i) in ("workflows", "stages", "demo"))
           for m, imports in _graph().items() if _top(m) == "posttrain"}
    assert not {m: i for m, i in bad.items() if i}


def test_stages_never_import_the_orchestrator():
    bad = {m: sorted(i for i in imports if _top(i) == "workflows") for m, imports in _graph().items()
           if _top(m) == "stages"}
    assert not {m: i for m, i in bad.items() if i}


def test_the_orchestrator_never_imports_stage_code():
    bad = {m: sorted(i for i in imports if _top(i) in ("stages", "demo")) for m, imports in _graph().items()
           if _top(m) == "workflows"}
    assert not {m: i for m, i in bad.items() if i}


def test_no_module_imports_another_in_a_circle():
    # A package's __init__ importing its own submodules is not a circle of concerns: drop those edges.
    graph = {m: {i for i in imports if not (m.startswith(i + ".") and (ROOT / i.replace(".", "/")).is_dir())}
             for m, imports in _graph().items()}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as err:
        raise AssertionError(f"import circle: {' -> '.join(err.args[1])}") from None


def test_no_module_is_over_the_size_limit():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_planning_a_pipeline_loads_no_heavy_library():
    code = (
        "import sys\n"
        "from workflows.config import compose\n"
        "from workflows.planning import build_plan\n"
        "from workflows.state.decide import decide\n"
        "from workflows.report.plan_text import render_plan\n"
        "decide(build_plan(compose(['+pipeline=sft_dpo_kto', 'tracking=none'])))\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"planning imported {out.stdout.strip()}"

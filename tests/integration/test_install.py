"""`python -m workflows.run` works after a plain (non-editable) `pip install`, away from the checkout."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_installed_package_plans_from_another_directory(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, cwd=tmp_path, timeout=300)
    venv = tmp_path / "venv"
    # reuse the already-installed dependencies; only posttrain itself goes into the venv
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *map(str, wheels.glob("*.whl"))],
                   check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([str(python), "-m", "workflows.run", "+pipeline=sft_dpo", "dry_run=true", "run_dir=run"],
                          cwd=work, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    installed = str(venv / "lib")
    assert "python -m stages.dpo" in proc.stdout
    spec_paths = subprocess.run(
        [str(python), "-c", "import posttrain.paths as p; print(p.CONF_DIR); print(p.project_path('data/demo/sft.jsonl'))"],
        cwd=work, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert len(spec_paths) == 2 and all(p.startswith(installed) for p in spec_paths), spec_paths

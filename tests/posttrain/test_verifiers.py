"""Verifiers (posttrain/verifiers.py): a user's checker gets its keyword arguments, a checker that
raises counts as a wrong answer, and every trainer row shape yields its prompt and reference."""

from __future__ import annotations

import pytest

from posttrain.verifiers import load_verifier, prompt_and_reference, prompt_text, verify


def test_user_checker_gets_its_keyword_arguments_and_errors_count_as_wrong(tmp_path, monkeypatch):
    (tmp_path / "my_checks.py").write_text(
        "def within(task, prompt, answer, output, tolerance):\n"
        "    return abs(float(output) - float(answer)) <= tolerance\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check = load_verifier({"_target_": "my_checks.within", "tolerance": 0.5})
    assert verify(check, None, "pi?", "3.14", "3.5")
    assert not verify(check, None, "pi?", "3.14", "4")
    assert not verify(check, None, "pi?", "3.14", "three")  # the checker raises: a wrong answer
    with pytest.raises(SystemExit, match="cannot import"):
        load_verifier({"_target_": "my_checks.nope"})


def test_prompt_and_reference_of_every_trainer_shape():
    user = [{"role": "user", "content": "copy: abcd"}]
    answer = [{"role": "assistant", "content": "abcd"}]
    assert prompt_and_reference({"messages": user + answer}) == (user, "abcd")
    assert prompt_and_reference({"prompt": user, "chosen": answer, "rejected": answer}) == (user, "abcd")
    assert prompt_and_reference({"prompt": "copy: abcd", "completion": "abcd"}) == (user, "abcd")
    assert prompt_and_reference({"messages": user}) == (user, None)
    assert prompt_text(user + answer + [{"role": "user", "content": "again"}]) == "again"

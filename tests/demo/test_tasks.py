"""The demo tasks' checker and solver (demo/tasks.py) agree with the answers they generate."""

from __future__ import annotations

from demo.tasks import build, check_or_solve, solve
from posttrain.verifiers import load_verifier, verify


def test_demo_checker_accepts_right_answers_and_refuses_near_misses():
    check = load_verifier({"_target_": "demo.tasks.check"})
    assert verify(check, "reverse", "reverse: abcd", "dcba", " dcba ")
    assert not verify(check, "reverse", "reverse: abcd", "dcba", "dcab")
    assert verify(check, "add", "add: 27+19", "46", "46")
    assert not verify(check, "add", "add: 27+19", "46", "45")


def test_demo_check_solves_prompts_without_a_reference():
    assert check_or_solve(None, "reverse: abcd", None, "dcba")
    assert not check_or_solve(None, "reverse: abcd", None, "abcd")
    assert not check_or_solve(None, "translate: bonjour", None, "hello")  # no demo task answers it
    assert not check_or_solve(None, "add: 3+4+5", None, "12")  # malformed for the add task
    assert solve("add: 3+4") == "7" and solve("sort: 4213") == "1234" and solve("foo: bar") is None


def test_demo_solver_agrees_with_every_generated_answer():
    heldout = build(0)["heldout"]
    assert all(solve(r["prompt"][0]["content"]) == r["answer"] for r in heldout)

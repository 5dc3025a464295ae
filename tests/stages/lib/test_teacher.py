"""Endpoint teachers and judges (stages/lib/teacher.py) against a stub OpenAI-compatible server on a
real socket: which answers a judge accepts, retries of a busy server, failed requests counted as no,
and the API key sent as a bearer token (and refused when missing)."""

from __future__ import annotations

import pytest

from stages.lib.teacher import EndpointError, EndpointTeacher, judge_verdicts
from tests.eval_helpers import StubServer


def settings(url: str, **overrides) -> dict:
    return {"endpoint": url, "model": "teacher", "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8,
            "batch_size": 2, "timeout": 10.0, "max_retries": 0, **overrides}


def test_a_judge_accepts_exactly_the_answers_it_says_yes_to():
    pairs = [("reverse: abcd", "dcba"), ("reverse: abcd", "abcd"), ("add: 3+4", "7")]
    with StubServer() as server:  # its judge says yes exactly when `dcba` is in the prompt it is shown
        judge = EndpointTeacher(settings(server.url), seed=0)
        assert judge_verdicts(judge, pairs) == [True, False, False]
    asked = [r["messages"][-1]["content"] for r in server.requests]
    for instruction, response in pairs:  # each pair was shown once, in the judge prompt
        assert sum(f"Instruction:\n{instruction}\n\nResponse:\n{response}\n" in a for a in asked) == 1
    assert judge.requests == 3 and judge.errors == 0


def test_busy_servers_are_retried_and_failed_requests_count_as_no():
    with StubServer(fail_first=1) as server:
        teacher = EndpointTeacher(settings(server.url, max_retries=1), seed=0)
        assert teacher.chat([[{"role": "user", "content": "reverse: abcd"}]]) == [["dcba"]]
    assert len(server.requests) == 2 and teacher.errors == 0
    with StubServer(fail_first=5) as server:
        judge = EndpointTeacher(settings(server.url), seed=0)
        assert judge_verdicts(judge, [("reverse: abcd", "dcba")]) == [False]  # no reply: no
    assert judge.errors == 1


def test_the_api_key_is_a_bearer_token_and_a_wrong_one_stops_the_stage(monkeypatch):
    monkeypatch.delenv("TEACHER_KEY", raising=False)
    with pytest.raises(EndpointError, match="TEACHER_KEY"):
        EndpointTeacher(settings("http://127.0.0.1:9/v1", api_key_env="TEACHER_KEY"), seed=0)
    with StubServer(key="s3cret") as server:
        monkeypatch.setenv("TEACHER_KEY", "s3cret")
        teacher = EndpointTeacher(settings(server.url, api_key_env="TEACHER_KEY"), seed=0)
        assert teacher.chat([[{"role": "user", "content": "copy: ab"}]]) == [["ab"]]
        monkeypatch.setenv("TEACHER_KEY", "wrong")
        refused = EndpointTeacher(settings(server.url, api_key_env="TEACHER_KEY"), seed=0)
        with pytest.raises(EndpointError, match="HTTP 401 \\(check api_key_env\\)"):
            refused.chat([[{"role": "user", "content": "copy: ab"}]])
    assert server.headers[0]["Authorization"] == "Bearer s3cret"

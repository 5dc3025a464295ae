"""`generate` stages at plan time: the teacher's endpoint and API key are checked before anything runs."""

from __future__ import annotations

import json

from tests.posttrain.stage_types.plans import plan, problems


def test_generate_teacher_endpoint_and_key_checked_before_running(monkeypatch):
    monkeypatch.delenv("POSTTRAIN_TEST_KEY", raising=False)
    base = ["stages.generate.generate.teacher.model=served-model"]
    found = problems(*base, "stages.generate.generate.teacher.endpoint=localhost:8000",
                     "stages.generate.generate.teacher.api_key_env=POSTTRAIN_TEST_KEY", pipeline="sft_distill")
    assert any(f.startswith("stages.generate.generate.teacher.endpoint: 'localhost:8000' is not an http(s):// URL")
               for f in found)
    assert any("environment variable POSTTRAIN_TEST_KEY is not set" in f for f in found)
    [secret] = problems(*base, "stages.generate.generate.teacher.endpoint=http://h/v1",
                        "stages.generate.generate.teacher.api_key_env=sk-abc123", pipeline="sft_distill")
    assert "is not an environment variable NAME" in secret
    monkeypatch.setenv("POSTTRAIN_TEST_KEY", "secret-value-42")
    p = plan(*base, "stages.generate.generate.teacher.endpoint=http://h:1/v1/",
             "stages.generate.generate.teacher.api_key_env=POSTTRAIN_TEST_KEY", pipeline="sft_distill")
    spec = p.stage("generate").spec
    assert spec.settings["teacher"]["endpoint"] == "http://h:1/v1"
    assert "secret-value-42" not in json.dumps(spec.to_dict())
    assert p.stage("generate").upstream == []  # an endpoint teacher needs no model of the pipeline

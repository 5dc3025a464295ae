"""What tracking logs is safe and MLflow-shaped (posttrain/tracking/redact.py): secrets are recognised
by name and redacted from keys, env values, URLs and argv; configs flatten to MLflow-safe params."""

from __future__ import annotations

from posttrain.tracking.redact import (REDACTED, flatten, is_secret_key, loggable_params, mlflow_name, param_value,
                                       redact)


def test_secret_keys_are_recognised_by_name():
    for key in ("hub_token", "HF_TOKEN", "api_key", "WANDB_API_KEY", "password", "db.password", "client_secret",
                "MLFLOW_TRACKING_PASSWORD", "aws_secret_access_key", "privateKey", "key", "Authorization"):
        assert is_secret_key(key), key
    for key in ("pad_token_id", "max_new_tokens", "tokenizer", "learning_rate", "monkey", "keys", "eos_token_id"):
        assert not is_secret_key(key), key


def test_redact_keys_env_values_and_urls():
    config = {
        "trainer": {"hub_token": "hf_abcdefghijklmnopqrstuvwxyz123456", "learning_rate": 0.001},
        "launcher": {"env": {"WANDB_API_KEY": "abc", "EXTRA": "HF_TOKEN=hf_secretsecretsecretsecret12", "N": "4"}},
        "tracking": {"uri": "https://alice:s3cret@mlflow.example.com"},
        "args": ["--token", "hf_abcdefghijklmnopqrstuvwxyz123456"],
    }
    out = redact(config)
    assert out["trainer"] == {"hub_token": REDACTED, "learning_rate": 0.001}
    assert out["launcher"]["env"] == {"WANDB_API_KEY": REDACTED, "EXTRA": f"HF_TOKEN={REDACTED}", "N": "4"}
    assert out["tracking"]["uri"] == f"https://alice:{REDACTED}@mlflow.example.com"
    assert out["args"] == ["--token", REDACTED]
    assert config["trainer"]["hub_token"].startswith("hf_")  # the input is left alone
    command = ["python", "-m", "workflows.run", "++launcher.env.DB_PASSWORD=abc", "stages.dpo.trainer.beta=0.1"]
    assert redact(command)[3:] == [f"++launcher.env.DB_PASSWORD={REDACTED}", "stages.dpo.trainer.beta=0.1"]


def test_flatten_and_mlflow_safe_params():
    config = {"trainer": {"beta": 0.1}, "peft": {"target_modules": ["q_proj", "v_proj"]},
              "data": {"sources": [{"path": "/d/a.jsonl"}, {"path": "/d/b.jsonl"}]}, "odd key(1)": {"x": None}}
    assert flatten(config) == {"trainer.beta": 0.1, "peft.target_modules": ["q_proj", "v_proj"],
                               "data.sources.0.path": "/d/a.jsonl", "data.sources.1.path": "/d/b.jsonl",
                               "odd key(1).x": None}
    params = loggable_params({**config, "long": "x" * 10000, "password": "hunter2"}, prefix="stage")
    assert params["stage.trainer.beta"] == "0.1"
    assert params["stage.odd key_1_.x"] == "null"
    assert params["stage.password"] == REDACTED
    assert len(params["stage.long"]) == 6000 and "truncated from 10000 chars" in params["stage.long"]
    assert len(mlflow_name("k" * 400)) == 250
    assert mlflow_name("a//b/../c") == "a/b/__/c" and param_value(None) == "null"

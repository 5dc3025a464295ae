"""Plan-time checks of `stages.<name>.trainer` against TRL's own field list (no TRL import).

What TRL declares comes from posttrain/trl_fields.json (generated from the installed TRL): field
names, types, choices (enums such as OptimizerNames, SchedulerType, IntervalStrategy, and list
members such as DPO's `loss_type`) and defaults. What the classes do not declare is RULES below,
kept by hand: ranges and cross-field rules that TRL's `__post_init__` or trainer `__init__`
enforces, or that only fail later (torch refusing a negative learning rate when the optimizer is
built, a batch size of 0 in the DataLoader). Each rule names where it is enforced, and
tests/workflows/planning/test_trainer.py runs the example of every rule enforced by a config class
through that real class, so a TRL upgrade that changes one shows up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from posttrain.names import quoted
from posttrain.registry import MANAGED_TRAINER_KEYS
from posttrain.suggest import did_you_mean
from posttrain.trl_fields import trl_fields
from workflows.planning.values import Domain

Values = dict[str, Any]  # TRL's defaults overlaid with the stage's trainer mapping
SHOW_CHOICES = 12


def _check_type(value: Any, type_str: str) -> bool:
    """Loose check of a YAML value against a TRL field's annotation string."""
    accepted = {t.strip() for t in re.split(r"[|]", type_str)}
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "None": lambda v: v is None,
    }
    for t in accepted:
        base = t.split("[")[0]
        if base in ("list",) and isinstance(value, list):
            return True
        if base in ("dict",) and isinstance(value, dict):
            return True
        if base not in checks and base not in ("list", "dict"):
            return True  # enums, Union, accelerate types: their choices are checked below
        if base in checks and checks[base](value):
            return True
    return False


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """A domain rule the field list cannot tell: `refuse(values)` -> (field, why) or None."""

    fields: tuple[str, ...]  # it applies when the stage sets one of these
    refuse: Callable[[Values], tuple[str, str] | None]
    enforced_by: str  # who refuses it: "<TRL/transformers class> refuses it" (tested against the class), or why
    example: Values  # trainer values it refuses
    classes: tuple[str, ...] = ()  # the TRL config classes it concerns; () = all


def _bound(field: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, integer: bool = False, enforced_by: str, example: Any,
           classes: tuple[str, ...] = (), when: Callable[[Values], bool] | None = None) -> Rule:
    """`field` (when set to a number, and `when` holds) must lie in the Domain from `low` to `high`."""
    domain = Domain(low, high, low_open, high_open, why=enforced_by)

    def refuse(values: Values) -> tuple[str, str] | None:
        value = values.get(field)
        if not _number(value) or (when is not None and not when(values)):
            return None
        if why := domain.problem(value):
            return field, why
        if integer and value > 1 and value != int(value):
            return field, f"{value} must be a whole number when above 1 (a fraction below 1 is a share of the steps)"
        return None

    return Rule((field,), refuse, enforced_by, {field: example}, classes)


def _steps(strategy: str, field: str, low_open: bool, enforced_by: str, example: float) -> Rule:
    """`<x>_steps` with `<x>_strategy: steps`: in range, and whole when above 1 (below 1 it is a share of
    the training steps; TrainingArguments refuses 2.5)."""
    rule = _bound(field, 0, low_open=low_open, integer=True, enforced_by=enforced_by, example=example,
                  when=lambda v: v.get(strategy) == "steps")
    return Rule(rule.fields, rule.refuse, enforced_by, {field: example, strategy: "steps"})


def _rule(fields: tuple[str, ...], enforced_by: str, example: Values, classes: tuple[str, ...] = ()):
    """Decorator: a cross-field rule from a function of the values."""
    def wrap(refuse: Callable[[Values], tuple[str, str] | None]) -> Rule:
        return Rule(fields, refuse, enforced_by, example, classes)
    return wrap


@_rule(("max_steps", "num_train_epochs"), "nothing would train", {"max_steps": -1, "num_train_epochs": 0})
def _trains_something(v: Values) -> tuple[str, str] | None:
    steps, epochs = v.get("max_steps"), v.get("num_train_epochs")
    if _number(steps) and steps == 0 or _number(steps) and steps < -1:
        return "max_steps", f"{steps} trains no step: give a positive number, or -1 to train num_train_epochs epochs"
    if _number(steps) and steps <= 0 and _number(epochs) and epochs <= 0:
        return "num_train_epochs", f"{epochs} with max_steps={steps} trains nothing: give epochs > 0 or max_steps > 0"
    return None


@_rule(("fp16", "bf16"), "TrainingArguments refuses it", {"fp16": True, "bf16": True})
def _one_precision(v: Values) -> tuple[str, str] | None:
    return ("fp16", "fp16 and bf16 are both true; choose one") if v.get("fp16") and v.get("bf16") else None


@_rule(("lr_scheduler_type", "eval_strategy"), "TrainingArguments refuses it",
       {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "no"})
def _scheduler_needs_eval(v: Values) -> tuple[str, str] | None:
    if v.get("lr_scheduler_type") in ("reduce_lr_on_plateau", "greedy") and v.get("eval_strategy") in ("no", None):
        return "lr_scheduler_type", f"{v['lr_scheduler_type']} needs evaluation: set eval_strategy to steps or epoch"
    return None


@_rule(("load_best_model_at_end", "eval_strategy", "save_strategy"), "TrainingArguments refuses it",
       {"load_best_model_at_end": True, "eval_strategy": "steps", "save_strategy": "epoch"})
def _best_model_strategies(v: Values) -> tuple[str, str] | None:
    if v.get("load_best_model_at_end") and v.get("save_strategy") != "best" and v.get("eval_strategy") != v.get(
            "save_strategy"):
        return "load_best_model_at_end", (f"needs save_strategy ({v.get('save_strategy')}) to match eval_strategy "
                                          f"({v.get('eval_strategy')}), or save_strategy=best")
    return None


@_rule(("dataloader_prefetch_factor", "dataloader_num_workers"), "TrainingArguments refuses it",
       {"dataloader_prefetch_factor": 2, "dataloader_num_workers": 0})
def _prefetch_needs_workers(v: Values) -> tuple[str, str] | None:
    if v.get("dataloader_prefetch_factor") is not None and not v.get("dataloader_num_workers"):
        return "dataloader_prefetch_factor", "needs dataloader_num_workers > 0"
    return None


@_rule(("loss_weights", "loss_type"), "DPOConfig refuses it", {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]},
       ("DPOConfig",))
def _one_weight_per_loss(v: Values) -> tuple[str, str] | None:
    weights, losses = v.get("loss_weights"), v.get("loss_type")
    losses = [losses] if isinstance(losses, str) else losses
    if isinstance(weights, list) and isinstance(losses, list) and len(weights) != len(losses):
        return "loss_weights", f"{len(weights)} weights for {len(losses)} loss types ({', '.join(map(str, losses))})"
    return None


_F_DIVERGENCE_LOSSES = {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"}


@_rule(("f_divergence_type", "loss_type", "use_weighting", "label_smoothing", "sync_ref_model",
        "precompute_ref_log_probs"), "DPOTrainer refuses it when the stage starts", {"f_divergence_type": "js_divergence",
                                                             "loss_type": ["apo_zero"]}, ("DPOConfig",))
def _dpo_loss_settings(v: Values) -> tuple[str, str] | None:
    losses = v.get("loss_type")
    losses = set([losses] if isinstance(losses, str) else losses or [])
    if v.get("f_divergence_type") not in (None, "reverse_kl") and not losses <= _F_DIVERGENCE_LOSSES:
        return "f_divergence_type", (f"{v['f_divergence_type']} works only with the losses "
                                     f"{', '.join(sorted(_F_DIVERGENCE_LOSSES))}, not {', '.join(sorted(losses))}")
    if v.get("use_weighting") and losses & {"aot", "aot_unpaired"}:
        return "use_weighting", "is not implemented for the aot and aot_unpaired losses"
    if "exo_pair" in losses and not v.get("label_smoothing"):
        return "label_smoothing", "must be above 0 with the exo_pair loss (the EXO paper uses 1e-3)"
    if v.get("sync_ref_model") and v.get("precompute_ref_log_probs"):
        return "sync_ref_model", "cannot be combined with precompute_ref_log_probs (the reference would change)"
    return None


@_rule(("loss_type", "train_sampling_strategy", "per_device_train_batch_size"), "KTOTrainer refuses it when the stage starts",
       {"loss_type": "kto", "per_device_train_batch_size": 1}, ("KTOConfig",))
def _kto_kl_term(v: Values) -> tuple[str, str] | None:
    if v.get("loss_type") == "apo_zero_unpaired":
        return None  # the only KTO loss without the KL estimate
    if v.get("train_sampling_strategy") not in (None, "sequential"):
        return "train_sampling_strategy", "must be sequential for the KL estimate of loss_type kto"
    if _number(v.get("per_device_train_batch_size")) and v["per_device_train_batch_size"] <= 1:
        return "per_device_train_batch_size", "must be above 1 for loss_type kto (its KL term needs a batch)"
    return None


RULES: tuple[Rule, ...] = (
    _bound("learning_rate", 0, enforced_by="torch.optim refuses it when the stage builds its optimizer", example=-1e-4),
    _bound("weight_decay", 0, enforced_by="torch.optim.AdamW refuses it", example=-0.1),
    _bound("adam_beta1", 0, 1, high_open=True, enforced_by="torch.optim.AdamW refuses it", example=1.0),
    _bound("adam_beta2", 0, 1, high_open=True, enforced_by="torch.optim.AdamW refuses it", example=1.5),
    _bound("adam_epsilon", 0, enforced_by="torch.optim.AdamW refuses it", example=-1e-8),
    _bound("per_device_train_batch_size", 1, enforced_by="torch's DataLoader refuses it", example=0),
    _bound("per_device_eval_batch_size", 1, enforced_by="torch's DataLoader refuses it", example=0),
    _bound("gradient_accumulation_steps", 1, enforced_by="the Trainer divides by it", example=0),
    _bound("num_train_epochs", 0, enforced_by="nothing would train", example=-1),
    _trains_something,
    _bound("warmup_steps", 0, enforced_by="TrainingArguments refuses it", example=-1),
    _bound("warmup_ratio", 0, 1, enforced_by="a share of the steps", example=1.5),
    _bound("max_grad_norm", 0, enforced_by="a norm", example=-1.0),
    _bound("torch_empty_cache_steps", 0, low_open=True, enforced_by="TrainingArguments refuses it", example=0),
    _steps("logging_strategy", "logging_steps", True, "TrainingArguments refuses it", 0),
    _steps("eval_strategy", "eval_steps", False, "TrainingArguments refuses it (0: every logging_steps)", 2.5),
    _steps("save_strategy", "save_steps", True, "the Trainer divides by it", 0),
    _bound("save_total_limit", 1, enforced_by="0 or less keeps every checkpoint", example=0),
    _bound("dataloader_num_workers", 0, enforced_by="torch's DataLoader refuses it", example=-1),
    _bound("seed", 0, 2**32 - 1, enforced_by="numpy refuses it as a seed", example=-1),
    _bound("data_seed", 0, 2**32 - 1, enforced_by="numpy refuses it as a seed", example=-1),
    _bound("max_length", 1, enforced_by="no token would be trained on", example=0),
    _bound("max_prompt_length", 1, enforced_by="no prompt token would be kept", example=0),
    _bound("max_completion_length", 1, enforced_by="no response token would be kept", example=0),
    _one_precision, _scheduler_needs_eval, _best_model_strategies, _prefetch_needs_workers,
    # DPO and KTO
    _bound("beta", 0, low_open=True, enforced_by="0 ignores the reference, below 0 reverses the preference",
           example=0.0, classes=("DPOConfig", "KTOConfig")),
    _bound("label_smoothing", 0, 0.5, high_open=True, enforced_by="a label-flip probability, below one half",
           example=0.5, classes=("DPOConfig",)),
    _bound("ld_alpha", 0, 1, enforced_by="DPOConfig's help: 'Must be in [0.0, 1.0]'", example=1.5,
           classes=("DPOConfig",)),
    _bound("ref_model_mixup_alpha", 0, 1, enforced_by="a mixing weight", example=2.0,
           classes=("DPOConfig", "KTOConfig")),
    _bound("desirable_weight", 0, enforced_by="a loss weight", example=-1.0, classes=("KTOConfig",)),
    _bound("undesirable_weight", 0, enforced_by="a loss weight", example=-1.0, classes=("KTOConfig",)),
    _one_weight_per_loss, _dpo_loss_settings, _kto_kl_term,
)


def _choice_problem(where: str, value: Any, allowed: list[Any], label: str) -> str | None:
    if not isinstance(value, str) or value in allowed:
        return None
    shown = ", ".join(map(str, allowed[:SHOW_CHOICES])) + (f" (+{len(allowed) - SHOW_CHOICES} more)"
                                                           if len(allowed) > SHOW_CHOICES else "")
    return f"{where}: {quoted(value)} is not one of {label} ({shown}){did_you_mean(value, map(str, allowed))}"


def _choices(where: str, value: Any, record: dict[str, Any], label: str) -> list[str]:
    """A string outside the field's `choices`; list items (or a space-separated string) outside `item_choices`."""
    problems = [_choice_problem(where, value, record["choices"], label)] if record.get("choices") else []
    if record.get("item_choices"):
        items = value if isinstance(value, list) else value.split() if isinstance(value, str) else []
        problems += [_choice_problem(f"{where}[{i}]", item, record["item_choices"], label)
                     for i, item in enumerate(items)]
    return [p for p in problems if p]


def rule_problems(name: str, trl_config: str, trainer: dict[str, Any], fields: dict[str, dict[str, Any]],
                  rules: tuple[Rule, ...] = RULES) -> list[str]:
    """The RULES a stage's trainer mapping breaks, on its values over TRL's defaults."""
    values = {k: r.get("default") for k, r in fields.items()} | trainer
    problems = []
    for rule in rules:
        if (rule.classes and trl_config not in rule.classes) or not set(rule.fields) & trainer.keys():
            continue
        if found := rule.refuse(values):
            problems.append(f"stages.{name}.trainer.{found[0]}: {found[1]}")
    return problems


def trainer_problems(name: str, trl_config: str, trainer: dict[str, Any], has_eval_data: bool = True) -> list[str]:
    """Unknown keys (with a suggestion), keys posttrain sets itself, values of the wrong type or outside
    their domain, and combinations TRL refuses."""
    fields = trl_fields()["classes"][trl_config]
    problems = []
    typed = {}
    for key, value in trainer.items():
        where = f"stages.{name}.trainer.{key}"
        if key in MANAGED_TRAINER_KEYS:
            problems.append(f"{where}: set by posttrain ({MANAGED_TRAINER_KEYS[key]})")
        elif key == "max_length" and value == "auto":
            continue  # measured on the stage's data (workflows/planning/data.py)
        elif key not in fields:
            problems.append(f"{where}: not a field of TRL's {trl_config}{did_you_mean(key, fields)}")
        elif not _check_type(value, fields[key]["type"]):
            problems.append(f"{where}: expected {fields[key]['type']}, got {value!r} ({type(value).__name__})")
        elif found := _choices(where, value, fields[key], f"TRL's {trl_config}.{key} values"):
            problems.extend(found)
        else:
            typed[key] = value  # rules read only values of the right type and domain
    problems.extend(rule_problems(name, trl_config, typed, fields))
    if trainer.get("eval_strategy") not in (None, "no") and not has_eval_data:
        problems.append(f"stages.{name}.trainer.eval_strategy: {trainer['eval_strategy']} needs eval data; set "
                        f"stages.{name}.data.eval_sources or .eval_fraction, or eval_strategy=no")
    return problems

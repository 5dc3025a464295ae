"""Measure models side by side on held-out data: `python -m stages.eval <stage.yaml>`.

For each model of `models` (the checkpoint, SFT, DPO, ...):
- task accuracy: greedy answers to `eval.tasks` prompts, each checked by the verifier
  `eval.checker` (posttrain/verifiers.py); overall, per task type, and for the task types the
  training data had (`seen`) apart from those it never had (`unseen`: zero-shot transfer);
- preference accuracy on `eval.pairs`: how often log p(chosen) > log p(rejected), and for a
  DPO/KTO model, relative to the reference it was trained against (the implicit reward);
- perplexity of the reference answers (`eval.tasks` answers, else the pairs' `chosen`).
A model measured before with the same weights, rows and settings is not measured again
(stages/lib/eval_cache.py): a sweep's variants share their checkpoint's and SFT model's numbers.
Metrics go to the manifest as `<model>/<metric>` (a gate names them `<this stage>/<model>/<metric>`);
results/samples.jsonl holds every (model, prompt, output, verdict), results/table.txt the table.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from posttrain.artifacts import METRICS_FILE, TABLE_FILE
from posttrain.data.files import iter_rows
from posttrain.data.formats import to_trainer_rows
from posttrain.spec import ModelRef, StageSpec
from posttrain.tracking import backend
from posttrain.verifiers import load_verifier, prompt_text, response_text, verify
from stages.lib import eval_cache, progress
from stages.lib.common import load_spec, log, write_manifest
from stages.lib.models import load_model
from stages.lib.sampling import generate, load, response_logprobs
from stages.lib.scoring import accuracy_metrics, perplexity_metrics, preference_metrics, side_by_side


def read_rows(path: str | None, max_rows: int | None, seed: int) -> list[dict[str, Any]]:
    """A held-out file's rows, or a seeded sample of `max_rows` of them in file order."""
    if not path:
        return []
    rows = [row for _, row in iter_rows(Path(path))]
    if max_rows and len(rows) > max_rows:
        keep = sorted(random.Random(seed).sample(range(len(rows)), max_rows))
        rows = [rows[i] for i in keep]
    return rows


def extract(output: str, how: str) -> str:
    """The part of a model's output the checker sees (`eval.extract`): all of it, or its first non-empty line."""
    if how == "first_line":
        return next((line.strip() for line in output.splitlines() if line.strip()), "")
    return output


def as_pair(row: dict[str, Any]) -> tuple[Any, str, str]:
    """(prompt, chosen text, rejected text) of a preference row, explicit or implicit prompt."""
    pair = to_trainer_rows(row, "preference", "preference")[0]
    return pair["prompt"], response_text(pair["chosen"]), response_text(pair["rejected"])


class Scorer:
    """Summed response log-probs of the pairs per model path, so a reference is scored once."""

    def __init__(self, spec: StageSpec, pairs: list[tuple[Any, str, str]]):
        self.spec, self.pairs, self.cache = spec, pairs, {}

    def pair_logps(self, path: str, model: Any, tokenizer: Any) -> tuple[list[float], list[float]]:
        if path not in self.cache:
            settings = self.spec.settings
            prompts = [p for p, _, _ in self.pairs]
            scored = [response_logprobs(model, tokenizer, prompts, [p[k] for p in self.pairs],
                                        settings["batch_size"], settings["max_length"]) for k in (1, 2)]
            self.cache[path] = ([s for s, _ in scored[0]], [s for s, _ in scored[1]])
        return self.cache[path]

    def reference_logps(self, entry: ModelRef, tokenizer: Any) -> tuple[list[float], list[float]]:
        reference = entry.reference
        assert reference is not None
        if reference.path not in self.cache:
            model = load_model(reference, self.spec).eval()
            self.pair_logps(reference.path, model, tokenizer)
        return self.cache[reference.path]


def evaluate(entry: ModelRef, spec: StageSpec, tasks: list[dict[str, Any]], scorer: Scorer,
             checker: Any, samples: list[dict[str, Any]]) -> dict[str, float]:
    """Every metric of one model; its per-row verdicts are appended to `samples`."""
    settings, label = spec.settings, entry.label
    model, tokenizer = load(entry, spec)
    cache_key = None if entry.reference else eval_cache.key(model, tokenizer, settings, tasks, scorer.pairs, checker)
    if cache_key and (hit := eval_cache.read(cache_key)):
        metrics, rows = hit
        samples.extend({"model": label, **row} for row in rows)
        log(spec, f"{label}: measured before with these weights, rows and settings; the numbers are reused")
        return metrics
    first = len(samples)
    metrics: dict[str, float] = {}
    if tasks:
        outputs = generate(model, tokenizer, [r["prompt"] for r in tasks], settings["max_new_tokens"],
                           settings["batch_size"])
        verdicts = []
        for row, (output,) in zip(tasks, outputs):
            prompt = prompt_text(row["prompt"])
            correct = verify(checker, row.get("task"), prompt, str(row["answer"]), extract(output, settings.get("extract", "none")))
            verdicts.append((row.get("task"), row.get("seen"), correct))
            samples.append({"model": label, "task": row.get("task"), "seen": row.get("seen"), "prompt": prompt,
                            "answer": str(row["answer"]), "output": output, "correct": correct})
        metrics.update(accuracy_metrics(verdicts))
    if scorer.pairs:
        chosen, rejected = scorer.pair_logps(entry.path, model, tokenizer)
        reference = scorer.reference_logps(entry, tokenizer) if entry.reference else (None, None)
        metrics.update(preference_metrics(chosen, rejected, *reference))
    if tasks:  # perplexity of the reference answers, else of the preferred responses
        prompts, responses = [r["prompt"] for r in tasks], [str(r["answer"]) for r in tasks]
    else:
        prompts, responses = [p for p, _, _ in scorer.pairs], [c for _, c, _ in scorer.pairs]
    answers = response_logprobs(model, tokenizer, prompts, responses, settings["batch_size"], settings["max_length"])
    metrics.update(perplexity_metrics([-s for s, _ in answers], [n for _, n in answers]))
    if cache_key:
        eval_cache.write(cache_key, metrics, [{k: v for k, v in row.items() if k != "model"} for row in samples[first:]])
    return metrics


def log_tables(spec: StageSpec, results_dir: Path) -> None:
    """The per-sample table and the side-by-side table, attached to the stage's tracking run."""
    tracker = backend(spec.tracking.backend)
    rows = [json.loads(line) for line in (results_dir / "samples.jsonl").read_text().splitlines()]
    if rows:
        tracker.log_table(spec, "eval/samples.json", {k: [r[k] for r in rows] for k in rows[0]})
    tracker.log_artifact(spec, str(results_dir / TABLE_FILE), "eval")


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    settings = spec.settings
    start = time.time()
    tasks = read_rows(settings.get("tasks"), settings.get("max_rows"), spec.seed)
    pairs = [as_pair(r) for r in read_rows(settings.get("pairs"), settings.get("max_rows"), spec.seed)]
    checker = load_verifier(settings["checker"])
    scorer, samples, by_model = Scorer(spec, pairs), [], {}
    log(spec, f"{len(tasks)} held-out prompts, {len(pairs)} held-out pairs, models: "
              + ", ".join(str(m.label) + (f" (reference {m.reference.ref})" if m.reference else "")
                          for m in spec.models))
    progress.begin(0, len(spec.models), phase="evaluating")  # step = models measured so far
    for done, entry in enumerate(spec.models, 1):
        began = time.time()
        by_model[str(entry.label)] = evaluate(entry, spec, tasks, scorer, checker, samples)
        shown = {k: round(v, 3) for k, v in by_model[str(entry.label)].items() if "/" not in k}
        progress.update(step=done, metrics={f"{entry.label}/{k}": v for k, v in shown.items()})
        log(spec, f"{entry.label}: {shown}  {time.time() - began:.1f}s")
    results_dir = Path(spec.model_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    by_kind = sorted(tasks, key=lambda r: (r.get("seen") is not True, str(r.get("task"))))  # seen tasks first
    seen = {r["task"]: r.get("seen") for r in by_kind if r.get("task")}
    table = side_by_side(by_model, seen)
    (results_dir / TABLE_FILE).write_text(table + "\n")
    (results_dir / METRICS_FILE).write_text(json.dumps(by_model, indent=2))
    log(spec, "held-out results:\n" + table)
    log_tables(spec, results_dir)
    metrics = {f"{label}/{k}": v for label, values in by_model.items() for k, v in values.items()}
    metrics["eval/seconds"] = round(time.time() - start, 2)
    references = {m.label: m.reference.path for m in spec.models if m.reference}
    write_manifest(spec, metrics, models={m.label: m.path for m in spec.models}, references=references,
                   held_out={"tasks": settings.get("tasks"), "pairs": settings.get("pairs"), "task_rows": len(tasks),
                             "pair_rows": len(pairs)})


if __name__ == "__main__":
    main()

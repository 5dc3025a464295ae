"""On-policy preference data: `python -m stages.onpolicy <stage.yaml>`.

The policy (e.g. the SFT model) samples k responses per prompt of `data` with temperature; the
verifier (`onpolicy.verifier`, stages/verifiers.py) checks each against the row's reference answer
(the last assistant turn, `completion` or `chosen`). A prompt becomes one pair:
- chosen = a correct sample, rejected = a wrong sample: the model's own mistake against its own
  success, the pairs on-policy DPO learns most from;
- no sample correct: chosen = the reference answer (`reference_fallback: true`, else no pair);
- no sample wrong: no pair (nothing to push away from).
Every distinct sample also becomes a KTO example labelled by its verdict (plus the reference
answer as desirable where it was used as `chosen`).

Writes <stage>/dataset/ with two configs (README front matter, as on the hub): the default
`pairs` (data.jsonl, format preference) and `kto` (kto.jsonl, format unpaired_preference).
A later stage reads `{stage: <this stage>}`, or `{stage: <this stage>, name: kto}` for the labels.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from posttrain.verifiers import load_verifier, prompt_and_reference, prompt_text, verify
from stages.lib.common import load_spec, log, write_manifest
from stages.lib.data import load_stage_data
from stages.lib.sampling import generate, load

DATASET_CARD = """---
configs:
- config_name: pairs
  default: true
  data_files:
  - split: train
    path: data.jsonl
- config_name: kto
  data_files:
  - split: train
    path: kto.jsonl
---
# {name}: on-policy preference data

Sampled from {policy}, {k} responses per prompt (temperature {temperature}), checked by {verifier}.
{pairs} pairs (data.jsonl, format preference; {from_reference} with the reference answer as chosen)
and {kto} labelled examples (kto.jsonl, format unpaired_preference) from {prompts} prompts.
"""


def build_pair(samples: list[str], verdicts: list[bool], reference: str | None, fallback: bool,
               rng: random.Random) -> tuple[tuple[str, str] | None, str, list[tuple[str, bool]]]:
    """(chosen, rejected) or None, the outcome, and the KTO examples of one prompt's samples.

    Outcomes: `sampled` (both from the samples), `reference` (chosen = the reference answer),
    `all_correct`, `none_correct` (no pair).
    """
    distinct: dict[str, bool] = {}
    for sample, ok in zip(samples, verdicts):
        if sample.strip():
            distinct.setdefault(sample, ok)
    correct = [s for s, ok in distinct.items() if ok]
    wrong = [s for s, ok in distinct.items() if not ok]
    kto = list(distinct.items())
    if not wrong:
        return None, "all_correct", kto
    rejected = rng.choice(wrong)
    if correct:
        return (rng.choice(correct), rejected), "sampled", kto
    if fallback and reference is not None and reference.strip() and reference != rejected:
        return (reference, rejected), "reference", kto + [(reference, True)]
    return None, "none_correct", kto


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    assert spec.policy is not None
    settings, seed = spec.settings, spec.seed
    rows = [prompt_and_reference(r) for r in load_stage_data(spec).train]
    model, tokenizer = load(spec.policy, spec)
    k = settings["samples_per_prompt"]
    log(spec, f"sampling {k} responses for each of {len(rows)} prompts from {spec.policy.path}")
    samples = generate(model, tokenizer, [p for p, _ in rows], settings["max_new_tokens"], settings["batch_size"],
                       num_samples=k, temperature=settings["temperature"], top_p=settings["top_p"], seed=seed)
    verifier = load_verifier(settings["verifier"])
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    pairs, kto, correct_samples = [], [], 0
    for (prompt, reference), drawn in zip(rows, samples):
        verdicts = [verify(verifier, None, prompt_text(prompt), reference, s) for s in drawn]
        correct_samples += sum(verdicts)
        pair, outcome, labelled = build_pair(drawn, verdicts, reference, settings["reference_fallback"], rng)
        outcomes[outcome] += 1
        if pair:
            pairs.append({"prompt": prompt, "chosen": _assistant(pair[0]), "rejected": _assistant(pair[1])})
        kto += [{"prompt": prompt, "completion": _assistant(text), "label": ok} for text, ok in labelled]
    summary = ", ".join(f"{k_} {v}" for k_, v in sorted(outcomes.items()))
    log(spec, f"{correct_samples} of {len(rows) * k} samples correct; prompts: {summary}; {len(pairs)} pairs")
    if not pairs:
        raise SystemExit(f"[{spec.name}] no pair could be built ({summary}): every prompt had only correct, or "
                         f"only wrong samples and no reference answer")
    dataset = Path(spec.model_dir)
    dataset.mkdir(parents=True, exist_ok=True)
    for file, items in (("data.jsonl", pairs), ("kto.jsonl", kto)):
        with open(dataset / file, "w") as f:
            f.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    (dataset / "README.md").write_text(DATASET_CARD.format(
        name=spec.name, policy=spec.policy.path, k=k, temperature=settings["temperature"],
        verifier=settings["verifier"]["_target_"], pairs=len(pairs), from_reference=outcomes["reference"],
        kto=len(kto), prompts=len(rows)))
    metrics = {"onpolicy/prompts": float(len(rows)), "onpolicy/samples": float(len(rows) * k),
               "onpolicy/sample_accuracy": correct_samples / max(1, len(rows) * k), "onpolicy/pairs": float(len(pairs)),
               "onpolicy/kto_examples": float(len(kto)),
               **{f"onpolicy/prompts_{k_}": float(v) for k_, v in outcomes.items()}}
    write_manifest(spec, metrics)


if __name__ == "__main__":
    main()

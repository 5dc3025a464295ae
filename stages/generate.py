"""Synthetic instruction data from seed tasks: `python -m stages.generate <stage.yaml>`.

As Self-Instruct and Alpaca do it: a teacher (a local model, or an OpenAI-compatible endpoint,
stages/teacher.py) is shown a few seed instructions from `data` and writes new ones
(`mode: self_instruct`), or answers the seed prompts themselves (`mode: distill`). Then:
1. instructions that nearly repeat a seed or an earlier one are dropped (character n-gram
   Jaccard >= dedup_threshold, stages/dedup.py; self_instruct only, seeds are the user's own);
2. the teacher answers each instruction; empty replies and failed requests are dropped;
3. a verifier keeps only correct answers: a program (`verifier._target_`, called with the seed's
   reference answer, or None for a new instruction) or a judge model (`judge`, asked yes/no);
4. exact duplicates of (instruction, response) are dropped.
Kept rows go to <stage>/dataset/data.jsonl as `messages` conversations, which a later stage reads
with `data.sources: [{stage: <this stage>}]`; every candidate with its fate goes to
<stage>/candidates.jsonl; the counts (kept, dropped by reason) are the manifest's metrics.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from posttrain.spec import StageSpec
from posttrain.verifiers import load_verifier, prompt_and_reference, prompt_text, verify
from stages.lib.common import load_spec, log, write_manifest
from stages.lib.data import load_stage_data
from stages.lib.dedup import NearDuplicates, normalize
from stages.lib.teacher import judge_verdicts, make_teacher

INSTRUCTION_PROMPT = """You write tasks for an instruction dataset. Examples of tasks:
{examples}

Write {n} new tasks in the same style, each different from the examples and from the others.
Write one task per line, each line starting with "Task: "."""
# `Task: ...`, `1. Task: ...`, `- Instruction 3: ...`
TASK_LINE = re.compile(r"^\s*(?:\d+[.)]\s*|[-*]\s*)?(?:task|instruction)\s*\d*\s*:\s*(?P<text>\S.*?)\s*$", re.I)


@dataclass
class Candidate:
    instruction: str
    reference: str | None = None  # the seed's answer (distill), None for a new instruction
    response: str | None = None
    dropped: str | None = None  # why; None = kept


def parse_instructions(reply: str) -> list[str]:
    """The instructions in a teacher's reply, one per `Task: ...` line."""
    return [m["text"] for line in reply.splitlines() if (m := TASK_LINE.match(line))]


def propose(teacher: Any, seeds: list[str], settings: dict[str, Any], rng: random.Random,
            counts: Counter) -> list[Candidate]:
    """Self-Instruct: new instructions written from random seed examples, near-duplicates dropped."""
    per_request = settings["instructions_per_request"]
    requests = -(-settings["num_instructions"] // per_request)
    prompts = []
    for _ in range(requests):
        examples = rng.sample(seeds, min(settings["examples_per_request"], len(seeds)))
        text = INSTRUCTION_PROMPT.format(examples="\n".join(f"Task: {e}" for e in examples), n=per_request)
        prompts.append([{"role": "user", "content": text}])
    index = NearDuplicates(settings["dedup_threshold"], settings["ngram"])
    for seed in seeds:
        index.add(seed)
    from_seeds = len(index.sets)  # indexed texts below this position are seeds
    candidates = []
    for (reply,) in teacher.chat(prompts):
        found = parse_instructions(reply or "")
        counts["replies_without_tasks"] += not found
        for instruction in found[:per_request]:
            candidate = Candidate(instruction)
            if hit := index.add(instruction):
                candidate.dropped = "copies_seed" if hit[1] < from_seeds else hit[0]
            candidates.append(candidate)
    return candidates


def answer(teacher: Any, candidates: list[Candidate], prompts: list[list[dict[str, Any]]], n: int) -> list[Candidate]:
    """The teacher's `n` responses to each live candidate (one candidate per response)."""
    live = [(c, p) for c, p in zip(candidates, prompts) if c.dropped is None]
    out = [c for c in candidates if c.dropped is not None]
    for (candidate, _), replies in zip(live, teacher.chat([p for _, p in live], n=n)):
        for reply in replies:
            filled = Candidate(candidate.instruction, candidate.reference, reply)
            if reply is None:
                filled.dropped = "teacher_error"
            elif not reply.strip():
                filled.dropped = "empty_response"
            out.append(filled)
    return out


def check(candidates: list[Candidate], settings: dict[str, Any], spec: StageSpec, seed: int) -> None:
    """Drop what the verifier (or judge) rejects, then exact duplicates of (instruction, response)."""
    live = [c for c in candidates if c.dropped is None]
    if settings.get("judge"):
        judge = make_teacher(settings["judge"], spec, seed)
        verdicts = judge_verdicts(judge, [(c.instruction, c.response) for c in live])
    else:
        verifier = load_verifier(settings["verifier"])
        verdicts = [verify(verifier, None, c.instruction, c.reference, c.response) for c in live]
    seen: set[tuple[str, str]] = set()
    for candidate, ok in zip(live, verdicts):
        key = (normalize(candidate.instruction), normalize(candidate.response or ""))
        if not ok:
            candidate.dropped = "verifier" if not settings.get("judge") else "judge"
        elif key in seen:
            candidate.dropped = "duplicate"
        seen.add(key)


def _describe(teacher: dict[str, Any]) -> str:
    return f"{teacher['model']} at {teacher['endpoint']}" if teacher.get("endpoint") else teacher["path"]


def main(argv: list[str] | None = None) -> None:
    spec = load_spec(argv)
    settings, seed = spec.settings, spec.seed
    rows = list(load_stage_data(spec).train)
    seeds = [prompt_and_reference(r) for r in rows]
    teacher = make_teacher(settings["teacher"], spec, seed)
    counts: Counter = Counter()
    if settings["mode"] == "self_instruct":
        candidates = propose(teacher, [prompt_text(p) for p, _ in seeds], settings, random.Random(seed), counts)
        prompts = [[{"role": "user", "content": c.instruction}] for c in candidates]
        candidates = answer(teacher, candidates, prompts, 1)
    else:
        candidates = [Candidate(prompt_text(p), reference) for p, reference in seeds]
        candidates = answer(teacher, candidates, [p for p, _ in seeds], settings["responses_per_prompt"])
    check(candidates, settings, spec, seed)
    kept = [c for c in candidates if c.dropped is None]
    dropped = Counter(c.dropped for c in candidates if c.dropped)
    stage_dir = Path(spec.stage_dir)
    with open(stage_dir / "candidates.jsonl", "w") as f:
        f.writelines(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in candidates)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) or "none"
    log(spec, f"kept {len(kept)} of {len(candidates)} candidates from {len(seeds)} seeds; dropped: {summary}; "
              f"teacher requests {teacher.requests}, failed {teacher.errors}")
    if not kept:
        raise SystemExit(f"[{spec.name}] no candidate survived (dropped: {summary}); see "
                         f"{stage_dir / 'candidates.jsonl'}")
    dataset = Path(spec.model_dir)
    dataset.mkdir(parents=True, exist_ok=True)
    with open(dataset / "data.jsonl", "w") as f:
        for c in kept:
            messages = [{"role": "user", "content": c.instruction}, {"role": "assistant", "content": c.response}]
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    source, checker = _describe(settings["teacher"]), settings["verifier"]["_target_"]
    if settings.get("judge"):
        checker = f"judge {_describe(settings['judge'])}"
    (dataset / "README.md").write_text(
        f"# {spec.name}: synthetic instructions ({settings['mode']})\n\nTeacher: {source}. Verifier: {checker}."
        f"\n\n{len(kept)} rows kept of {len(candidates)} candidates; dropped: {summary}.\n")
    metrics = {"generate/seeds": float(len(seeds)), "generate/candidates": float(len(candidates)),
               "generate/kept": float(len(kept)), "generate/teacher_requests": float(teacher.requests),
               "generate/teacher_errors": float(teacher.errors),
               "generate/replies_without_tasks": float(counts["replies_without_tasks"]),
               **{f"generate/dropped/{k}": float(v) for k, v in dropped.items()}}
    write_manifest(spec, metrics, teacher=source, mode=settings["mode"])


if __name__ == "__main__":
    main()

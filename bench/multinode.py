"""DPO step time on 2 Slurm nodes x 1 process against 1 node x 2 processes, same global batch,
through posttrain's multi-node path (srun per node, torchrun, c10d rendezvous, gloo on CPU).

    python -m bench.multinode [--quick] [--repeats 3]        # as root, with the two-node cluster up

Needs the two-node test cluster (`bash .ci/slurm/two_nodes/up.sh`): both "nodes" are network
namespaces of this machine, so the 2-node variant's gradients cross a veth pair and a bridge
where the 1-node variant's cross loopback; both share the same cores. Each variant runs
`python -m workflows.run +pipeline=sft_dpo launcher=slurm` (DPO only, from a Llama built from
config) on the cluster's login node, interleaved A B A B; step time is the median over the steps
after the first two (rank 0, bench/observer). Not in bench/run_all.py: it needs root and the
cluster. No target: the ratio is what a TCP hop between nodes costs at this size.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT, Bench, BenchError, build_checkpoint, disable, median, parameters, parse, progress, run, stage_observations,
    step_durations,
)

ON = ROOT / ".ci" / "slurm" / "two_nodes" / "on.sh"
FULL = {"model": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 8, "num_attention_heads": 12,
                  "num_key_value_heads": 12},  # ~57M parameters: an all-reduce of ~230 MB per step
        "steps": 12, "batch": 4}
QUICK = {"model": {}, "steps": 4, "batch": 4}
VARIANTS = {"2 nodes x 1 process": (2, 1), "1 node x 2 processes": (1, 2)}
WARM_STEPS = 2  # left out of the step time


def run_variant(bench: Bench, model_dir: Path, nodes: int, processes: int, size: dict[str, Any], tag: str) -> dict[str, Any]:
    run_dir, observe = bench.workdir / tag, bench.workdir / f"{tag}-observe"
    args = ["+pipeline=sft_dpo", "tracking=none", f"run_dir={run_dir}", "model=hf", f"model.name_or_path={model_dir}",
            *disable("sft_dpo", "sft", "eval", "kto"), "stages.dpo.policy=checkpoint",
            "launcher=slurm", "launcher.wait=true", "launcher.poll_seconds=1",
            f"stages.dpo.resources.nodes={nodes}", f"stages.dpo.resources.processes_per_node={processes}",
            "stages.dpo.data.eval_sources=[]", f"stages.dpo.trainer.max_steps={size['steps']}",
            f"stages.dpo.trainer.per_device_train_batch_size={size['batch']}", "stages.dpo.trainer.save_strategy=no",
            "stages.dpo.trainer.logging_steps=1", "stages.dpo.trainer.warmup_steps=0"]
    result = run(["bash", str(ON), "pt-head", sys.executable, "-m", "workflows.run", *args],
                 env=bench.env(observe=observe))
    ranks = stage_observations(observe, "dpo")
    if len(ranks) != 2:
        raise BenchError(f"expected 2 training processes, observed {len(ranks)}")
    steps = step_durations(ranks[0])
    later = steps[WARM_STEPS:] or steps
    return {"step_s": median([s["seconds"] for s in later]), "wall_s": result.wall_s}


def main(argv: list[str] | None = None) -> None:
    bench, _ = parse("multinode", __doc__.splitlines()[0], argv, repeats=3)
    if not ON.exists() or not Path("/run/netns/pt-head").exists():
        raise SystemExit("bench.multinode needs the two-node cluster: bash .ci/slurm/two_nodes/up.sh (as root)")
    size = QUICK if bench.quick else FULL
    model_dir = build_checkpoint(bench, size["model"])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for i in range(bench.repeats):  # A B A B ...
        for j, (name, (nodes, processes)) in enumerate(VARIANTS.items()):
            with progress(f"repeat {i + 1}/{bench.repeats}: {name}"):
                results[name].append(run_variant(bench, model_dir, nodes, processes, size, f"v{j}-{i}"))
    one_node = median([r["step_s"] for r in results["1 node x 2 processes"]])
    rows = [{"variant": name, "step_s": median([r["step_s"] for r in rs]),
             "step_vs_1_node": median([r["step_s"] for r in rs]) / one_node,
             "stage_wall_s": median([r["wall_s"] for r in rs])} for name, rs in results.items()]
    n_params = parameters(model_dir)
    print(f"\nmodel: {n_params / 1e6:.1f}M parameters; global batch {2 * size['batch']} (2 processes x "
          f"{size['batch']}), {size['steps']} steps, gloo over TCP")
    bench.finish(rows, [], results=results, model_parameters=n_params, size=size)


if __name__ == "__main__":
    main()

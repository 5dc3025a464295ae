"""`posttrain status [run_dir] [--json]`: where every stage of a run_dir's latest invocation stands.

Reads only files (workflows/state/observe.py), so it works while the pipeline runs (no lock), after
it crashed, on someone else's run_dir; a scheduler's queue comes through the launcher. Exit code 1
when a stage failed, was interrupted, cancelled, gated, skipped or never started; 2 for a folder
that is not a run_dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from posttrain.progress import format_seconds
from posttrain.status import Status
from workflows.state.observe import NOT_STARTED, NotARunDir, RunState, observe, run_dir_argument

NOT_OK = {Status.FAILED.value, Status.INTERRUPTED.value, Status.CANCELLED.value, Status.GATED.value,
          Status.SKIPPED.value, NOT_STARTED}


def render(state: RunState, now: float | None = None) -> str:
    now = now or time.time()
    who = state.orchestrator
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started_at)) if state.started_at else "?"
    head = f"Pipeline '{state.pipeline}' in {state.run_dir}: {state.state}"
    if state.state == "running" and who.get("alive"):
        head += f" (pid {who['pid']} on {who['host']}, started {started}, {format_seconds(now - state.started_at)} ago)"
    elif state.state == "stopped":
        head += f" (pid {who['pid']} on {who['host']}, started {started}, ended without a summary: killed or crashed)"
    elif state.finished_at:
        head += f" (started {started}, took {format_seconds(state.finished_at - (state.started_at or 0))})"
    lines = [head]
    width = max((len(s.name) for s in state.stages), default=5)
    type_width = max((len(s.type) for s in state.stages), default=4) + 2
    status_width = max((len(s.status) for s in state.stages), default=6)
    for s in state.stages:
        lines.append(f"  {s.name:<{width}}  {'[' + s.type + ']':<{type_width}}  {s.status:<{status_width}}  "
                     f"{s.detail}".rstrip())
        facts = []
        if s.fingerprint:
            facts.append(f"fingerprint {s.fingerprint[:12]}")
        if s.output_dir:
            facts.append(f"output {s.output_dir}")
        if facts:
            lines.append(f"  {'':<{width}}  {'   '.join(facts)}")
        if s.run_link:
            lines.append(f"  {'':<{width}}  tracking {s.run_link}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posttrain status", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a pipeline's run_dir (default: this directory if it is one, "
                                                   "else the newest run under ./outputs)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        state = observe(run_dir_argument(args.run_dir))
    except NotARunDir as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(state.to_dict(), indent=2) if args.json else render(state))
    return 1 if any(s.status in NOT_OK for s in state.stages) else 0


if __name__ == "__main__":
    sys.exit(main())

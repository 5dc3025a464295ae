"""Helpers for tests on the two-node Slurm cluster of `.ci/slurm/two_nodes/up.sh`.

The cluster lives in network namespaces: its controller answers only inside them. Everything that
talks to it runs "on" a node through `.ci/slurm/two_nodes/on.sh` (the login node `pt-head` for
posttrain itself, sbatch, scontrol). Stdlib only.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ON = ROOT / ".ci" / "slurm" / "two_nodes" / "on.sh"
HEAD, NODES = "pt-head", ("pt-node1", "pt-node2")
UP_HINT = "run as root: bash .ci/slurm/two_nodes/up.sh"
_READY = ("idle", "mix", "alloc", "comp")


def on(node: str, *argv: str) -> list[str]:
    """The argv that runs `argv` on `node` (its network, hostname and /etc/hosts; the cluster's SLURM_CONF)."""
    return ["bash", str(ON), node, *argv]


def head(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(on(HEAD, *argv), capture_output=True, text=True, timeout=timeout, check=False)


def cluster_available() -> tuple[bool, str]:
    """(True, summary) when both nodes are up, else (False, why) for pytest.skip."""
    if os.geteuid() != 0:
        return False, f"the two-node cluster needs root (network namespaces; {UP_HINT})"
    if not Path("/run/netns", HEAD).exists():
        return False, f"no two-node Slurm cluster on this machine ({UP_HINT})"
    try:
        proc = head("sinfo", "-h", "-N", "-o", "%N %t", timeout=15)
    except subprocess.TimeoutExpired:
        return False, f"the two-node cluster's controller does not answer ({UP_HINT})"
    states = dict(line.split() for line in proc.stdout.splitlines() if len(line.split()) == 2)
    if proc.returncode != 0 or any(states.get(n) not in _READY for n in NODES):
        return False, f"two-node cluster not ready: {states or proc.stderr.strip()} ({UP_HINT})"
    return True, f"nodes {', '.join(f'{n} {s}' for n, s in states.items())}"


def job(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, Reason, ExitCode, RunTime, TimeLimit, ...)."""
    out = head("scontrol", "-o", "show", "job", job_id).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def seconds(slurm_time: str) -> int:
    """Slurm's [D-]HH:MM:SS (or MM:SS) in seconds."""
    days, _, clock = slurm_time.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


class Background:
    """A command started in the background, its output collected line by line."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path = ROOT):
        self.lines: list[str] = []
        self.started = time.time()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until(self, condition: Callable[[], object], what: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"the command ended before {what}:\n{self.output[-4000:]}")
            if time.time() > deadline:
                raise AssertionError(f"no {what} after {timeout:g}s:\n{self.output[-4000:]}")
            time.sleep(0.1)

    def finish(self, timeout: float = 600) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"still running after {timeout:g}s:\n{self.output[-4000:]}") from None
        self.reader.join(10)
        return code

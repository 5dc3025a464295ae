"""Helpers for tests that talk to a real Slurm cluster (see ``.ci/slurm/up.sh``).

Stdlib only. Typical use::

    from tests.slurm_cluster import slurm_available, wait_for_jobs

    ok, why = slurm_available()
    if not ok:
        pytest.skip(why)
    states = wait_for_jobs([job_id], timeout=60)
    assert states[job_id]["state"] == "COMPLETED"

Things observed on the Debian 12 / Slurm 22.05 test cluster that callers should know:

* ``sacct`` lags ``slurmctld`` by up to ~1-2 s: a job that was just submitted (or cancelled
  while pending) may not be listed yet, so "missing from sacct" means "keep waiting".
* ``sacct``'s ``Reason`` is a snapshot of why the job was pending when its record was last written
  (for a child killed by ``--kill-on-invalid-dep`` it is ``None`` or ``Dependency`` depending on
  timing), while ``scontrol show job`` reports the final reason (``DependencyNeverSatisfied``) but
  only for ``MinJobAge`` seconds after the job ended. ``wait_for_jobs`` prefers the latter.
* An ``afterok:<id>`` on a job slurmctld no longer knows (purged after ``MinJobAge``) is accepted
  by sbatch and treated as satisfied: the child runs.
* ``sacct`` shows ``CANCELLED by <uid>``; the ``state`` returned here is the first word only
  (the full text is in ``raw_state``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable

__all__ = [
    "TERMINAL_STATES",
    "UP_HINT",
    "job_states",
    "slurm_available",
    "wait_for_jobs",
]

UP_HINT = "run: bash .ci/slurm/up.sh"

#: Job states after which a job never runs again (short and long spellings).
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "TIMEOUT",
        # squeue/scontrol short forms, just in case
        "BF",
        "CA",
        "CD",
        "DL",
        "F",
        "NF",
        "OOM",
        "PR",
        "TO",
    }
)

_READY_NODE_STATES = ("idle", "mix", "alloc", "comp")


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=os.environ.copy(),
    )


def _controller_address() -> tuple[str, int] | None:
    """(host, port) of the primary slurmctld from slurm.conf, if it can be read."""
    path = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    host = None
    port = 6817
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, _, value = line.partition("=")
        key = key.strip().lower()
        value = value.strip().split()[0] if value.strip() else ""
        if key in ("slurmctldhost", "controlmachine") and host is None and value:
            m = re.fullmatch(r"([^(]+)(?:\(([^)]+)\))?", value)
            if m:
                host = m.group(2) or m.group(1)
        elif key == "slurmctldport" and value:
            try:
                port = int(value.split("-")[0])
            except ValueError:
                pass
    return (host, port) if host else None


def slurm_available(timeout: float = 5.0) -> tuple[bool, str]:
    """Is a Slurm controller answering, with at least one usable node?

    Returns ``(True, "<summary>")`` or ``(False, "<human-readable reason>")``; the reason is meant
    to be passed straight to ``pytest.skip``.
    """
    for tool in ("sinfo", "sbatch", "squeue"):
        if shutil.which(tool) is None:
            return False, f"Slurm client '{tool}' not installed ({UP_HINT})"
    # Fast path: a refused TCP connect means no controller (sinfo itself would retry for ~10 s).
    addr = _controller_address()
    if addr is not None:
        try:
            with socket.create_connection(addr, timeout=min(timeout, 2.0)):
                pass
        except ConnectionRefusedError:
            return False, f"no Slurm controller answering on {addr[0]}:{addr[1]} ({UP_HINT})"
        except OSError:
            pass  # unresolvable name, timeout, ...: let sinfo decide
    try:
        proc = _run(["sinfo", "-h", "-o", "%n %t"], timeout)
    except subprocess.TimeoutExpired:
        return False, f"no Slurm controller answering within {timeout:g}s ({UP_HINT})"
    except OSError as exc:
        return False, f"cannot run sinfo: {exc} ({UP_HINT})"
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        msg = detail[-1] if detail else f"sinfo exited {proc.returncode}"
        return False, f"no Slurm controller answering ({UP_HINT}): {msg}"
    nodes = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    if not nodes:
        return False, f"Slurm controller answers but reports no nodes ({UP_HINT})"
    # states may carry flags such as '*' (not responding), '~', '#', '-', '@'
    ready = [n for n in nodes if len(n) == 2 and n[1] in _READY_NODE_STATES]
    if not ready:
        states = ", ".join(" ".join(n) for n in nodes)
        return False, f"no Slurm node idle/mix/alloc (got: {states}) ({UP_HINT})"
    return True, f"Slurm up: {', '.join(' '.join(n) for n in ready)}"


def _norm_state(raw: str) -> str:
    # "CANCELLED by 0" -> "CANCELLED"; "COMPLETED+" / "RUNNING" unchanged apart from '+'
    return raw.split()[0].rstrip("+") if raw.strip() else ""


def _sacct(ids: list[str], timeout: float) -> dict[str, dict[str, str]] | None:
    """Job records from sacct, or None if sacct is unusable (missing, accounting off, dbd down)."""
    if shutil.which("sacct") is None:
        return None
    cmd = [
        "sacct",
        "-X",  # allocations only, no .batch/.extern/.0 steps
        "-j",
        ",".join(ids),
        "-n",
        "-P",
        "-o",
        "JobID,State,Reason,Start,End,ExitCode",
    ]
    try:
        proc = _run(cmd, timeout)
    except (subprocess.TimeoutExpired, OSError):
        return None
    if proc.returncode != 0:
        return None
    out: dict[str, dict[str, str]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 6 or "." in parts[0]:
            continue
        job_id, raw_state, reason, start, end, exit_code = parts[:6]
        # a requeued job appears once per run; the last line is the current one
        out[job_id] = {
            "state": _norm_state(raw_state),
            "raw_state": raw_state,
            "reason": reason,
            "start": start,
            "end": end,
            "exit_code": exit_code,
            "source": "sacct",
        }
    return out


_SCONTROL_FIELDS = {
    "JobState": "raw_state",
    "Reason": "reason",
    "StartTime": "start",
    "EndTime": "end",
    "ExitCode": "exit_code",
}


def _scontrol(job_id: str, timeout: float) -> dict[str, str] | None:
    """One job's record from ``scontrol show job``; None if unknown (purged) or unreachable."""
    if shutil.which("scontrol") is None:
        return None
    try:
        proc = _run(["scontrol", "-o", "show", "job", job_id], timeout)
    except (subprocess.TimeoutExpired, OSError):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    line = proc.stdout.splitlines()[0]
    rec: dict[str, str] = {}
    for key, name in _SCONTROL_FIELDS.items():
        m = re.search(rf"(?:^|\s){key}=(\S*)", line)
        rec[name] = m.group(1) if m else ""
    rec["state"] = _norm_state(rec["raw_state"])
    rec["source"] = "scontrol"
    return rec


def job_states(job_ids: Iterable[int | str], timeout: float = 10.0) -> dict[str, dict[str, str]]:
    """Current record of each job (sacct first, ``scontrol show job`` for the ones sacct lacks).

    Jobs neither tool knows are left out. Keys of each record: state, raw_state, reason, start,
    end, exit_code, source ("sacct" or "scontrol").
    """
    ids = [str(j) for j in job_ids]
    found = _sacct(ids, timeout) or {}
    for job_id in ids:
        if job_id not in found:
            rec = _scontrol(job_id, timeout)
            if rec is not None:
                found[job_id] = rec
    return {j: found[j] for j in ids if j in found}


def _final(rec: dict[str, str]) -> bool:
    """Terminal state, and (for sacct) the end time recorded: after a slurmdbd outage sacct can
    briefly show ``FAILED`` with ``End=Unknown`` and ``ExitCode=0:0`` while slurmctld replays."""
    if rec.get("state") not in TERMINAL_STATES:
        return False
    return rec.get("source") != "sacct" or rec.get("end") not in ("", "Unknown", "None")


def _with_final_reason(rec: dict[str, str], job_id: str) -> dict[str, str]:
    """sacct's Reason is whatever the job was last pending for when slurmctld wrote the record,
    which is racy (``None`` or ``Dependency`` for the same scenario). While slurmctld still knows
    the job (``MinJobAge``), its final reason (e.g. ``DependencyNeverSatisfied``) wins."""
    if rec.get("source") != "sacct":
        return rec
    rec = dict(rec, sacct_reason=rec["reason"])
    ctl = _scontrol(job_id, 10.0)
    if ctl is not None and ctl["state"] == rec["state"] and ctl["reason"]:
        rec["reason"] = ctl["reason"]
    return rec


def wait_for_jobs(
    job_ids: Iterable[int | str],
    timeout: float = 120.0,
    poll: float = 0.5,
    sacct_grace: float = 10.0,
) -> dict[str, dict[str, str]]:
    """Poll until every job is in a terminal state; return ``{job_id: record}``.

    A record has ``state`` (e.g. ``COMPLETED``, ``FAILED``, ``CANCELLED``), ``reason``, ``start``,
    ``end`` (``YYYY-MM-DDTHH:MM:SS`` or ``Unknown``/``None``), plus ``raw_state``, ``exit_code``,
    ``source`` and, for sacct records, ``sacct_reason``. ``reason`` is slurmctld's final reason when
    it still knows the job (see ``_with_final_reason``), else sacct's. Note that a job cancelled
    before it ever ran has ``start == end`` == the cancel time in sacct.

    sacct (``-n -P -X -o JobID,State,Reason,Start,End,ExitCode``) is the source of truth; when
    sacct is unusable (not installed, accounting disabled, slurmdbd down) ``scontrol show job`` is
    used instead. A job that scontrol already reports finished but sacct has not listed after
    ``sacct_grace`` seconds is taken from scontrol. Raises ``TimeoutError`` (with the last states
    seen) if not all jobs finish within ``timeout`` seconds.
    """
    ids = [str(j) for j in job_ids]
    deadline = time.monotonic() + timeout
    done_by_scontrol_since: dict[str, float] = {}
    done: dict[str, dict[str, str]] = {}  # final records
    seen: dict[str, dict[str, str]] = {}  # latest in-flight view, for the timeout message
    while True:
        now = time.monotonic()
        per_call = max(1.0, min(10.0, deadline - now))
        todo = [j for j in ids if j not in done]
        acct = _sacct(todo, per_call)
        for job_id in todo:
            rec = acct.get(job_id) if acct is not None else None
            if rec is not None and _final(rec):
                done[job_id] = rec
                continue
            # sacct unusable, or its record is missing/not final yet (slurmdbd lags slurmctld)
            ctl = _scontrol(job_id, per_call)
            if ctl is not None and _final(ctl):
                if acct is None:
                    done[job_id] = ctl
                    continue
                since = done_by_scontrol_since.setdefault(job_id, now)
                if now - since >= sacct_grace:
                    done[job_id] = ctl
                    continue
            view = rec or ctl
            if view is not None:
                seen[job_id] = view
        if len(done) == len(ids):
            return {j: _with_final_reason(done[j], j) for j in ids}
        if time.monotonic() >= deadline:
            summary = ", ".join(
                f"{j}={seen[j]['raw_state'] or '?'}" if j in seen else f"{j}=<unknown>"
                for j in ids
                if j not in done
            )
            raise TimeoutError(f"Slurm jobs not finished after {timeout:g}s: {summary}")
        time.sleep(poll)

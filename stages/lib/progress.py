"""A stage process's progress.json and history.jsonl (layout and readers: posttrain/artifacts.py).

The main process writes progress.json when it starts (`start`, from load_spec), at every logging
step (`update`, from the training callback or a stage's own loop) and on the way out: `failed`
with the exception's last line, `interrupted` when it stopped on a signal, `done` after its
manifest. A process killed outright (kill -9, OOM, node loss) leaves its last record: a reader
sees a dead pid and the step it reached. Writing never raises: losing a progress record must not
fail a stage.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import replace
from typing import Any

from posttrain import stop
from posttrain.artifacts import Progress, StageDir
from posttrain.spec import StageSpec

_state: dict[str, Any] = {}  # "progress": this attempt's Progress, "dir": its StageDir


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _write() -> None:
    progress, folder = _state.get("progress"), _state.get("dir")
    if progress is None or folder is None:
        return
    try:
        folder.write_progress(progress)
    except OSError as err:
        print(f"[{progress.stage}] could not write {folder.progress_file} ({err}); training goes on",
              file=sys.stderr, flush=True)


def start(spec: StageSpec) -> None:
    """This attempt's record; its end (failed, interrupted, done) is recorded on the way out."""
    if not _main_process() or _state:
        return
    folder = StageDir(spec.stage_dir)
    now = time.time()
    try:
        log_start = folder.log_file.stat().st_size
    except OSError:
        log_start = 0
    _state.update(dir=folder, progress=Progress(stage=spec.name, pid=os.getpid(), host=socket.gethostname(),
                                                started_at=now, updated_at=now, fingerprint=spec.fingerprint,
                                                log_start=log_start))
    _write()
    previous_hook = sys.excepthook

    def record_exception(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        lines = traceback.format_exception_only(kind, value)
        update(phase="failed", error=lines[-1].strip() if lines else kind.__name__)
        previous_hook(kind, value, tb)

    sys.excepthook = record_exception
    atexit.register(_at_exit)


def update(**fields: Any) -> None:
    """Change fields of this attempt's record (step, max_steps, metrics, phase ...) and rewrite it."""
    if "progress" not in _state:
        return
    _state["progress"] = replace(_state["progress"], updated_at=time.time(), **fields)
    _write()


def begin(step: int, max_steps: int, phase: str = "training") -> None:
    """The counted work starts at `step` (0, or a resumed checkpoint's): the history keeps what came before it."""
    if "progress" not in _state:
        return
    folder: StageDir = _state["dir"]
    kept = [e for e in folder.read_history() if e["step"] <= step] if step else []
    try:
        with open(folder.history_file, "w") as f:
            f.writelines(json.dumps(e) + "\n" for e in kept)
    except OSError:
        pass
    update(phase=phase, step=step, first_step=step, max_steps=max_steps, training_since=time.time())


def log_step(step: int, max_steps: int, metrics: dict[str, Any]) -> None:
    """One logging step: appended to history.jsonl, and the latest values in progress.json."""
    if "progress" not in _state:
        return
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        with open(_state["dir"].history_file, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **numbers}) + "\n")
    except OSError:
        pass
    latest = {**_state["progress"].metrics, **numbers}
    update(step=step, max_steps=max_steps, metrics=latest)


def _at_exit() -> None:
    progress: Progress | None = _state.get("progress")
    if progress is None or progress.phase == "failed":
        return
    if _state["dir"].manifest_file.is_file():
        update(phase="done")
    elif stop.requested():
        update(phase="interrupted")
    else:  # SystemExit with a message, or an error a library printed: the message is in stage.log
        update(phase="failed")

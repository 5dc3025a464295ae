"""What a local run shows while its stages run: the launcher reports each event to a `Console`.

Off a terminal (a log file, Slurm output, CI) `PlainConsole` prints what it always has: `==> sft
[sft] (new)`, each stage line as it comes (`[sft] step 10/500  loss 5.3  1s`), a failed stage's
last lines. On a terminal `LiveConsole` (rich) draws the pipeline instead: one row per stage with
its status, elapsed time, progress bar, step, ETA and latest metrics, redrawn in place from the
running stage's progress.json; the stage's other lines scroll above it, its step lines are not
echoed (stage.log keeps them). Never both. `POSTTRAIN_LIVE=0` keeps a terminal plain.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

from posttrain.pipeline import Plan, PlannedStage, StageResult
from posttrain.progress import STEP_LINE, format_seconds, headline
from posttrain.status import Status

QUEUED, RUNNING = "queued", "running"
BAR_WIDTH = 24
STYLES = {"completed": "green", "cached": "dim", "given": "dim", "running": "bold cyan", "failed": "bold red",
          "interrupted": "yellow", "skipped": "yellow", "gated": "yellow", "cancelled": "yellow", "queued": "dim"}


class Console(Protocol):
    def stage_started(self, stage: PlannedStage) -> None: ...

    def stage_line(self, stage: PlannedStage, line: str) -> None:
        """A line the stage's process printed (with its newline)."""

    def stage_last_words(self, stage: PlannedStage, line: str) -> None:
        """A line printed after Ctrl-C, while the stage saves its checkpoint and stops."""

    def stage_failed(self, stage: PlannedStage, why: str, tail: list[str]) -> None: ...

    def stage_ended(self, stage: PlannedStage, result: StageResult) -> None:
        """Every stage's result: ran, cached, skipped or gated."""


class PlainConsole:
    def __init__(self, echo: bool):
        self.echo = echo

    def stage_started(self, stage: PlannedStage) -> None:
        print(f"==> {stage.name} [{stage.type}] ({stage.reason})", flush=True)

    def stage_line(self, stage: PlannedStage, line: str) -> None:
        if self.echo:
            sys.stdout.write(line if line.startswith(f"[{stage.name}]") else f"[{stage.name}] {line}")
            sys.stdout.flush()

    def stage_last_words(self, stage: PlannedStage, line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    def stage_failed(self, stage: PlannedStage, why: str, tail: list[str]) -> None:
        print(f"==> {stage.name} failed ({why}); last lines of its log:\n    " + "\n    ".join(tail), file=sys.stderr)

    def stage_ended(self, stage: PlannedStage, result: StageResult) -> None:
        pass


class LiveConsole:
    """The pipeline as a table redrawn in place (rich.live); `render()` is the table at this moment."""

    def __init__(self, plan: Plan, echo: bool, console: Any = None):
        from rich.console import Console as RichConsole

        self.plan, self.echo = plan, echo
        self.console = console or RichConsole()
        self.began = time.time()
        self.status: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        for stage in plan.stages:
            self.status[stage.name] = (Status.GIVEN.value if stage.external else
                                       Status.CACHED.value if stage.cached else QUEUED)
        self.live: Any = None

    # ------------------------------------------------------------------ events

    def stage_started(self, stage: PlannedStage) -> None:
        self.status[stage.name], self.started[stage.name] = RUNNING, time.time()

    def stage_line(self, stage: PlannedStage, line: str) -> None:
        if self.echo and not STEP_LINE.match(line):  # a step is in the table's row (from progress.json)
            self._print(line.rstrip("\n") if line.startswith(f"[{stage.name}]") else f"[{stage.name}] {line.rstrip()}")

    def stage_last_words(self, stage: PlannedStage, line: str) -> None:
        self._print(line.rstrip("\n"))

    def stage_failed(self, stage: PlannedStage, why: str, tail: list[str]) -> None:
        self._print(f"==> {stage.name} failed ({why}); last lines of its log:\n    " + "\n    ".join(tail),
                    style="red")

    def stage_ended(self, stage: PlannedStage, result: StageResult) -> None:
        self.status[stage.name] = result.status.value
        self.ended[stage.name] = time.time()

    def _print(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style or ""), soft_wrap=True)

    # ------------------------------------------------------------------ drawing

    def render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        done = sum(s in (Status.COMPLETED, Status.CACHED, Status.GIVEN) for s in self.status.values())
        title = (f"{self.plan.name}: {done}/{len(self.plan.stages)} stages done, "
                 f"{format_seconds(now - self.began)} elapsed")
        table = Table(title=Text(title, style="bold"), title_justify="left", expand=False, pad_edge=False, box=None)
        widths = {"status": 11, "elapsed": 7, "progress": BAR_WIDTH, "step": 9, "ETA": 6}  # steady columns
        for column in ("stage", "status", "elapsed", "progress", "step", "ETA", "latest"):
            table.add_column(column, no_wrap=column != "latest", min_width=widths.get(column),
                             justify="right" if column in ("elapsed", "ETA") else "left")
        for stage in self.plan.stages:
            status = self.status[stage.name]
            started = self.started.get(stage.name)
            elapsed = format_seconds(self.ended.get(stage.name, now) - started) if started else ""
            bar, step, eta, latest = "", "", "", ""
            progress = stage.dir.read_progress() if started else None  # this attempt's (cleared before it started)
            if progress is not None and progress.max_steps:
                bar = ProgressBar(total=progress.max_steps, completed=progress.step, width=BAR_WIDTH)
                step = f"{progress.step}/{progress.max_steps}"
                eta = format_seconds(progress.eta_seconds(now)) if status == RUNNING else ""
                latest = "  ".join(f"{k} {v:.4g}" for k, v in headline(progress.metrics))
            elif status == RUNNING:
                latest = progress.phase if progress else "starting"
            table.add_row(Text.assemble(stage.name, " ", (f"[{stage.type}]", "dim")),
                          Text(status, style=STYLES.get(status, "")), elapsed, bar, step, eta, Text(latest))
        return table

    def __enter__(self) -> LiveConsole:
        from rich.live import Live

        self.live = Live(console=self.console, get_renderable=self.render, refresh_per_second=4, transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is not None:  # Ctrl-C or an error: the stage that was running did not finish
            for name, status in self.status.items():
                if status == RUNNING:
                    self.status[name] = Status.INTERRUPTED.value if issubclass(kind, KeyboardInterrupt) else "failed"
                    self.ended[name] = time.time()
        self.live.__exit__(kind, value, tb)  # the last drawing stays on screen, the cursor below it


def live_wanted() -> bool:
    """A terminal that can redraw in place, and the user did not ask for plain lines (POSTTRAIN_LIVE=0)."""
    return (sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb"
            and os.environ.get("POSTTRAIN_LIVE", "1") not in ("0", "false", "no"))


@contextlib.contextmanager
def console_for(plan: Plan) -> Iterator[Console]:
    """The console a local run reports to: live on a terminal, plain lines otherwise."""
    echo = bool(plan.config["launcher"].get("stream_logs", True))
    if not live_wanted():
        yield PlainConsole(echo)
        return
    with LiveConsole(plan, echo) as console:
        yield console

"""What every stage shares: the artifacts root, error reporting, rich progress."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vlpipe.artifacts import default_root
from vlpipe.errors import VlpipeError

console = Console()
err_console = Console(stderr=True)


def root_of(ctx: typer.Context) -> Path:
    """The artifacts root chosen with ``vlpipe --root`` (else ``$VLPIPE_ARTIFACTS`` or ./artifacts)."""
    c: typer.Context | None = ctx
    while c is not None:
        if isinstance(c.obj, dict) and c.obj.get("root") is not None:
            return Path(c.obj["root"])
        c = c.parent
    return default_root()


def human_size(n: int | float | None) -> str:
    """1234567 -> '1.2 MB' (binary units); None -> '-'."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def command_line() -> str:
    return "vlpipe " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@contextmanager
def user_errors(resume_hint: str | None = None) -> Iterator[None]:
    """Turn library errors into one red line and a non-zero exit; Ctrl-C into exit 130."""
    try:
        yield
    except VlpipeError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        msg = "interrupted; no artifact was published"
        if resume_hint:
            msg += f" ({resume_hint})"
        err_console.print(f"[yellow]{msg}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


class RichProgress:
    """Renders :class:`vlpipe.progress.Progress` reports as rich progress bars."""

    def __init__(self, console: Console = err_console, transient: bool = False, log_every: float = 15.0):
        # Without a terminal (CI logs, pipes) rich draws nothing live: print a plain line instead
        # every ``log_every`` seconds per task.
        self._plain = not console.is_terminal
        self._log_every = log_every
        self._last_log: dict[str, float] = {}
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=transient,
        )
        self._tasks: dict[str, TaskID] = {}
        self._units: dict[str, str] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def start(self, task: str, total: int | None = None, unit: str = "items") -> None:
        self._units[task] = unit
        if task in self._tasks:
            self._progress.reset(self._tasks[task], total=total)
        else:
            self._tasks[task] = self._progress.add_task(task, total=total, rate="", info="")

    def advance(self, task: str, n: int = 1, **fields: Any) -> None:
        if task not in self._tasks:
            self.start(task)
        tid = self._tasks[task]
        info = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        self._progress.update(tid, advance=n, info=info)
        t = self._progress.tasks[self._tasks_index(tid)]
        if t.speed:
            self._progress.update(tid, rate=f"{t.speed:,.0f} {self._units[task]}/s")
        if self._plain:
            now = time.monotonic()
            if now - self._last_log.get(task, 0.0) >= self._log_every:
                self._last_log[task] = now
                total = f"/{t.total:,.0f}" if t.total else ""
                rate = f" {t.speed:,.1f} {self._units[task]}/s" if t.speed else ""
                self._progress.console.print(f"{task}: {t.completed:,.0f}{total}{rate} {info}", highlight=False)

    def _tasks_index(self, tid: TaskID) -> int:
        for i, t in enumerate(self._progress.tasks):
            if t.id == tid:
                return i
        raise KeyError(tid)

    def finish(self, task: str) -> None:
        if task in self._tasks:
            t = self._progress.tasks[self._tasks_index(self._tasks[task])]
            if t.total is None:
                self._progress.update(self._tasks[task], total=t.completed)

    def note(self, message: str) -> None:
        self._progress.console.print(message, highlight=False)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def train_on_ranks(builder: Any, env: Any, resume: bool, run: Any) -> tuple[Any, dict]:
    """Run ``run(progress) -> stats`` on every rank into one artifact staged by rank 0.

    Rank 0 enters ``builder`` (staging folder, resume state), the other ranks wait for it and share
    that folder; rank 0 renders progress with rich and publishes. On any error rank 0 cleans up the
    builder as its context manager would; every rank shuts the process group down. Returns the
    published artifact (None on other ranks) and the stats.
    """
    import contextlib

    from vlpipe.progress import NullProgress
    from vlpipe.train import distributed

    if env.is_main:
        builder.__enter__()
    distributed.barrier()
    if not env.is_main:  # other ranks share the staging folder rank 0 prepared
        builder.resumed = resume and (builder.dir / "_state.json").exists()
    try:
        reporter = RichProgress() if env.is_main else None
        with reporter or contextlib.nullcontext():
            stats = run(reporter or NullProgress())
        art = builder.publish(stats) if env.is_main else None
    except BaseException as e:
        if env.is_main:
            builder.__exit__(type(e), e, e.__traceback__)
        raise
    finally:
        distributed.shutdown()
    return art, stats

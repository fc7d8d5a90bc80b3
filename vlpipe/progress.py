"""A tiny progress protocol: the library reports, the stages render (with rich).

Library code takes an optional ``progress: Progress`` and calls ``progress.start(task, total)``,
``progress.advance(task, n, **fields)`` and ``progress.finish(task)``. ``NullProgress`` is the
silent default; tests may use ``RecordingProgress`` to check what was reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Progress(Protocol):
    def start(self, task: str, total: int | None = None, unit: str = "items") -> None: ...

    def advance(self, task: str, n: int = 1, **fields: Any) -> None: ...

    def finish(self, task: str) -> None: ...

    def note(self, message: str) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, task: str, total: int | None = None, unit: str = "items") -> None:
        """Ignored."""

    def advance(self, task: str, n: int = 1, **fields: Any) -> None:
        """Ignored."""

    def finish(self, task: str) -> None:
        """Ignored."""

    def note(self, message: str) -> None:
        """Ignored."""


@dataclass
class RecordingProgress:
    """Keeps every report; for tests."""

    totals: dict[str, int | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def start(self, task: str, total: int | None = None, unit: str = "items") -> None:
        self.totals[task] = total
        self.counts.setdefault(task, 0)

    def advance(self, task: str, n: int = 1, **fields: Any) -> None:
        self.counts[task] = self.counts.get(task, 0) + n

    def finish(self, task: str) -> None:
        self.finished.append(task)

    def note(self, message: str) -> None:
        self.notes.append(message)

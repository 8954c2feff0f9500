"""Live progress of an ingest run on a terminal: items, rate and time left per stage.

Updated as shards finish, so it works the same whether shards run in threads or on Dask workers.
Silent when output is not a terminal (logs and CI stay clean).
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# counter name -> label shown
STAGES = {
    "shards": "shards",
    "stills": "stills read",
    "frames": "frames extracted",
    "downloads": "images downloaded",
    "images_ok": "images decoded",
    "faces_detected": "faces detected",
    "crops_kept": "crops kept",
}


class StageProgress:
    def __init__(self, totals: dict[str, int], enabled: bool | None = None, console: Console | None = None):
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self._progress = None
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("{task.description:>18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(),
            transient=False,
        )
        self._tasks = {
            name: self._progress.add_task(label, total=totals.get(name), rate="") for name, label in STAGES.items()
        }
        self._progress.start()

    def advance(self, counts: dict[str, int]) -> None:
        if not self._progress:
            return
        for name, task_id in self._tasks.items():
            step = counts.get(name, 0) if name != "shards" else 1
            self._progress.advance(task_id, step)
            task = self._progress.tasks[task_id]
            speed = task.finished_speed or task.speed
            self._progress.update(task_id, rate=f"{speed:.1f}/s" if speed else "")

    def add_total(self, name: str, more: int) -> None:
        if self._progress:
            task = self._progress.tasks[self._tasks[name]]
            self._progress.update(self._tasks[name], total=(task.total or 0) + more)

    def close(self) -> None:
        if self._progress:
            self._progress.stop()

"""Auto-numbered run folders (``runs/infer/run-001``, ``run-002``...) so that no run overwrites another."""

from __future__ import annotations

import json
import queue
import re
import threading
from pathlib import Path


def next_run_folder(parent: str | Path, prefix: str = "run") -> Path:
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)$")
    numbers = [int(m.group(1)) for p in parent.iterdir() if (m := pattern.match(p.name))]
    number = max(numbers, default=0) + 1
    while True:  # mkdir without exist_ok: two runs started together cannot share a folder
        folder = parent / f"{prefix}-{number:03d}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1


class RecordWriter(threading.Thread):
    """The writer stage of a run: takes jobs from a bounded queue (so what waits in memory is bounded) and writes
    ``results.jsonl`` line by line, each line flushed. The file is opened by the caller's thread, so that an
    unwritable run folder fails the run at once. After an error the thread keeps taking jobs and drops them, so
    that the stages feeding it never block; the run then stops and raises ``failure``. Subclasses handle a job in
    ``handle`` (drawing, then ``write_record``) and release what they hold in ``finish``."""

    def __init__(self, folder: Path, append: bool, queue_size: int):
        super().__init__(name="writer", daemon=True)
        self.folder = folder
        self.handle = open(folder / "results.jsonl", "a" if append else "w")
        self.jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self.failure: BaseException | None = None

    def run(self) -> None:
        with self.handle:
            while (job := self.jobs.get()) is not None:
                if self.failure is not None:
                    continue
                try:
                    self.handle_job(job)
                except Exception as exc:  # noqa: BLE001 - kept, reported by the run, never lost silently
                    self.failure = exc
            self.finish()

    def write_record(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def handle_job(self, job) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement handle_job()")

    def finish(self) -> None:
        """Called on the writer's thread once the last job is done."""

"""What flows from a source to the pipeline: ``Frame``, one per record, in the order the records are written.

A source (``ImageFileSource``: files decoded by a pool of decoder processes; ``VideoSource``: video files, webcams and
network streams, each on a reader thread) yields batches of frames through ``batches(size, stop)``; every frame
becomes exactly one record. A frame with an image is scored; one without is an error of its input or an event of
its source (``disconnect``, ``reconnect``, ``end``, ``stopped``). Record fields: ``docs/records.md``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

@dataclass(frozen=True)
class Frame:
    """An image file (``video`` False; ``index``: its position among the run's inputs) or a video frame (``video``
    True; ``index``: its position in its source, counted before the stride). ``event`` is "frame" for a decoded
    image, "error" for an input or source that failed (``detail`` says why), or a source event."""

    source: str
    index: int
    timestamp: float = 0.0  # seconds: the position in a video file, or since a live source's reader started
    image: np.ndarray | None = None
    event: str = "frame"
    detail: str = ""
    decode_ms: float = 0.0
    queued_at: float = 0.0  # time.perf_counter() when it was ready for the model
    video: bool = False

    @property
    def scored(self) -> bool:
        return self.event == "frame" and self.image is not None

    def identity(self) -> dict:
        """The fields that say which input a record is about."""
        if not self.video:
            return {"index": self.index, "source": self.source}
        if self.event == "frame":
            return {"source": self.source, "frame": self.index, "timestamp": round(self.timestamp, 3)}
        return {"source": self.source}

    def unscored_record(self) -> dict:
        """The record of an error or an event."""
        if self.event == "error":
            return {**self.identity(), "status": "error", "error": self.detail}
        return {**self.identity(), "status": "event", "event": self.event, "detail": self.detail,
                "timestamp": round(self.timestamp, 3)}

    def stem(self) -> str:
        """The file name stem of this frame's pictures."""
        if not self.video:
            return f"{self.index:05d}_{Path(self.source).stem}"
        return f"{safe_name(self.source)}_{self.index:07d}"


def safe_name(source: str) -> str:
    """A file name part for a source: a file's own name, or the URL / webcam index made file-safe."""
    name = Path(source).name if "://" not in source else source.split("://", 1)[1]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]


class Source(Protocol):
    total: int | None  # frames known in advance (image files), None for streams
    stopped_by: str    # "", or the source's own limit that stopped the run ("max-frames", "duration")

    def batches(self, size: int, stop: threading.Event) -> Iterator[list[Frame]]:
        """Up to ``size`` scorable frames per batch, with the errors and events met on the way, in record order.
        Once ``stop`` is set nothing new is read; what was read still comes."""

    def stats(self) -> dict:
        """Counters for the summary (``dropped``, ``decoded`` per video source)."""


class ChainedSource:
    """Sources one after the other: a run of image files and videos writes the images' records first."""

    def __init__(self, sources: list):
        self.sources = sources
        self.total = None if any(s.total is None for s in sources) else sum(s.total for s in sources)

    @property
    def stopped_by(self) -> str:
        return next((s.stopped_by for s in self.sources if s.stopped_by), "")

    def batches(self, size: int, stop: threading.Event) -> Iterator[list[Frame]]:
        for source in self.sources:
            if stop.is_set():
                return
            yield from source.batches(size, stop)

    def stats(self) -> dict:
        merged: dict = {"dropped": 0, "decoded": {}}
        for source in self.sources:
            stats = source.stats()
            merged["dropped"] += stats.get("dropped", 0)
            merged["decoded"].update(stats.get("decoded", {}))
        return merged

"""Video files, webcams and network streams as a source: one ``VideoReader`` thread per source, frames taken
round-robin so that no source starves, and the run's own limits (``--max-frames``, ``--duration``)."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Iterator, Sequence

from auditor_rt.runtime.frames import Frame
from auditor_rt.runtime.streams import StreamOptions, VideoReader

IDLE_WAIT_S = 0.005


class VideoSource:
    """Every frame the readers deliver until each source has ended, ``max_frames`` frames were delivered or
    ``duration`` seconds passed (then ``stopped_by`` says which). ``skip_through`` maps a video file to the last
    frame an earlier run scored (``--resume``): it goes on after it."""

    total = None

    def __init__(self, sources: Sequence[str], options: StreamOptions | None = None, max_frames: int | None = None,
                 duration: float | None = None, skip_through: dict[str, int] | None = None):
        self.sources, self.options = list(sources), options or StreamOptions()
        self.max_frames, self.duration, self.skip_through = max_frames, duration, skip_through or {}
        self.readers: list[VideoReader] = []
        self.delivered = 0
        self.unscored: dict[str, int] = {}  # frames read but cut by --max-frames, per source
        self.stopped_by = ""

    def fps(self, source: str) -> float:
        """The frame rate of the scored frames of ``source`` (0 when it reports none)."""
        reader = next((r for r in self.readers if r.source_id == source), None)
        return reader.fps / self.options.vid_stride if reader is not None else 0.0

    def stats(self) -> dict:
        return {"dropped": sum(r.buffer.dropped for r in self.readers),
                "decoded": {r.source_id: r.decoded for r in self.readers}}

    def batches(self, size: int, stop: threading.Event) -> Iterator[list[Frame]]:
        self.readers = [VideoReader(source, self.options, stop, self.skip_through.get(source, -1))
                        for source in self.sources]
        for reader in self.readers:
            reader.start()
        began, turn = time.perf_counter(), 0
        try:
            while True:
                if self.duration is not None and time.perf_counter() - began >= self.duration and not stop.is_set():
                    self.stopped_by = self.stopped_by or "duration"
                    stop.set()
                frames, events, turn = self._collect(size, turn)
                frames = self._within_limit(frames, stop)
                batch = frames + [self._record_of(event) for event in events]  # events after the frames before them
                if batch:
                    yield batch
                elif all(r.buffer.drained for r in self.readers):
                    break
                else:
                    self.readers[turn % len(self.readers)].buffer.wait(IDLE_WAIT_S)
            stop.set()
            self._join()
            last = self._leftovers()  # the events the readers gave on their way out
            if last:
                yield last
        finally:
            stop.set()
            self._join()

    def _join(self) -> None:
        for reader in self.readers:
            reader.join(timeout=self.options.read_timeout + 1)

    def _collect(self, size: int, turn: int) -> tuple[list[Frame], list[Frame], int]:
        """Up to ``size`` frames round-robin, and the events met on the way."""
        frames: list[Frame] = []
        events: list[Frame] = []
        idle = 0
        while len(frames) < size and idle < len(self.readers):
            reader = self.readers[turn % len(self.readers)]
            turn += 1
            item = reader.buffer.get_nowait()
            if item is None:
                idle += 1
                continue
            idle = 0
            (frames if item.event == "frame" else events).append(item)
        return frames, events, turn

    def _within_limit(self, frames: list[Frame], stop: threading.Event) -> list[Frame]:
        if self.max_frames is None:
            self.delivered += len(frames)
            return frames
        keep = max(0, self.max_frames - self.delivered)
        for frame in frames[keep:]:
            self.unscored[frame.source] = self.unscored.get(frame.source, 0) + 1
        self.delivered += min(keep, len(frames))
        if self.delivered >= self.max_frames and not stop.is_set():
            self.stopped_by = "max-frames"
            stop.set()
        return frames[:keep]

    def _record_of(self, event: Frame) -> Frame:
        """An ``end`` only when every frame read from the source was scored: after --max-frames cut some, the
        source is recorded as ``stopped``, so that ``--resume`` goes on with it instead of taking it as done."""
        if event.event == "end" and self.unscored.get(event.source):
            return dataclasses.replace(event, event="stopped", detail=f"{self.unscored[event.source]} frames read "
                                       "after the run's limit were not scored")
        if event.event == "error":
            return dataclasses.replace(event, detail=f"{event.source}: {event.detail}")
        return event

    def _leftovers(self) -> list[Frame]:
        events = []
        for reader in self.readers:
            while (item := reader.buffer.get_nowait()) is not None:
                if item.event == "frame":
                    self.unscored[item.source] = self.unscored.get(item.source, 0) + 1
                else:
                    events.append(self._record_of(item))
        return events

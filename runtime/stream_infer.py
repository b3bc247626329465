"""``infer`` on video sources as overlapped stages: one reader thread per source (decode), batching and inference
on the calling thread, and a writer thread (JSONL records and overlays) behind a bounded queue, so a slow disk
does not stall decoding and memory stays bounded on an endless stream.

Every frame scored gives one ``ok`` record. Every disconnect, reconnect and end of a source gives an ``event``
record, as does a stop that cuts a source short (``stopped``), and a source that fails or gives up gives one
``error`` record. Ctrl-C or SIGTERM stops the readers, and
what was read is still scored and written, so the JSONL stays valid line by line.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from auditor_rt.runtime.auditor import Auditor
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.resume import ResumeState
from auditor_rt.runtime.runfolder import RecordWriter
from auditor_rt.runtime.signals import stop_on_interrupt
from auditor_rt.runtime.streams import Frame, StreamOptions, VideoReader
from auditor_rt.runtime.visualize import draw_caption, draw_regions, overlay, write_rgb

WRITE_QUEUE = 64
DEFAULT_VIDEO_FPS = 25.0  # annotated videos of sources that report no frame rate (some live streams)
IDLE_WAIT_S = 0.005


@dataclass
class StreamSummary:
    folder: Path
    ok: int = 0
    errors: int = 0
    events: int = 0
    positives: int = 0
    dropped: int = 0
    decoded: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_by: str = ""  # "", "max-frames", "duration" or "interrupt"

    @property
    def fps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"run_folder": str(self.folder), "ok": self.ok, "errors": self.errors, "events": self.events,
                "dropped": self.dropped, "positives": self.positives, "decoded": self.decoded,
                "seconds": round(self.seconds, 3), "fps": round(self.fps, 2), "stopped_by": self.stopped_by,
                "results": str(self.folder / "results.jsonl")}


@dataclass
class SaveRule:
    """Which scored frames get an overlay image: all, only positives, at most one per source every N seconds."""

    enabled: bool = True
    only_positive: bool = False
    every_n_seconds: float = 0.0
    video: bool = False  # an annotated video per source, every scored frame
    show: bool = False   # a window per source, every scored frame (needs a display and OpenCV with a GUI)
    _last: dict[str, float] = field(default_factory=dict)

    def wants(self, frame: Frame, positive: bool) -> bool:
        if not self.enabled or (self.only_positive and not positive):
            return False
        last = self._last.get(frame.source_id)
        if self.every_n_seconds and last is not None and frame.timestamp - last < self.every_n_seconds:
            return False
        self._last[frame.source_id] = frame.timestamp
        return True


@dataclass
class _Job:
    """One record for the writer, with what it needs to draw the frame (done on the writer's thread, off the path
    from decoding to inference)."""

    record: dict
    image: np.ndarray | None = None
    result: object = None
    save_image: bool = False
    save_video: bool = False
    show: bool = False


class _Writer(RecordWriter):
    """Writes records, overlay images and annotated videos in arrival order (see ``RecordWriter``)."""

    def __init__(self, folder: Path, append: bool = False, fps_of: Callable[[str], float] = lambda source: 0.0):
        super().__init__(folder, append, WRITE_QUEUE)
        self.fps_of = fps_of
        self.videos: dict[str, object] = {}

    def handle_job(self, job: _Job) -> None:
        if job.save_image or job.save_video or job.show:
            self._draw(job)
        self.write_record(job.record)

    def finish(self) -> None:
        for video in self.videos.values():
            video.release()

    def _draw(self, job: _Job) -> None:
        began = time.perf_counter()
        record, result = job.record, job.result
        positive = record.get("label") == "risk"
        picture = overlay(job.image, result.heatmap)
        picture = draw_regions(picture, result.regions) if positive else picture
        picture = draw_caption(picture, f"{'RISK' if positive else 'ok'} {result.score:.3f}")
        if job.save_image:
            folder = self.folder / "overlays"
            folder.mkdir(exist_ok=True)
            name = folder / f"{_safe(record['source_id'])}_{record['frame']:07d}.jpg"
            write_rgb(name, picture)
            record["overlay"] = str(name)
        if job.save_video:
            self._video(record["source_id"], picture).write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            record["video"] = str(self._video_path(record["source_id"]))
        if job.show:
            cv2.imshow(f"auditor-rt: {record['source_id']}", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            cv2.waitKey(1)
        record["timings"]["draw_ms"] = round((time.perf_counter() - began) * 1000, 2)

    def _video(self, source_id: str, picture: np.ndarray):
        """The annotated video of a source (MJPEG in AVI), opened at its first frame's size."""
        if source_id not in self.videos:
            folder = self.folder / "videos"
            folder.mkdir(exist_ok=True)
            height, width = picture.shape[:2]
            fps = self.fps_of(source_id) or DEFAULT_VIDEO_FPS
            self.videos[source_id] = cv2.VideoWriter(str(self._video_path(source_id)),
                                                     cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        return self.videos[source_id]

    def _video_path(self, source_id: str) -> Path:
        name = _safe(source_id)
        if "://" not in source_id:  # clip.mp4 -> clip.avi
            name = name.removesuffix(Path(source_id).suffix) or name
        return self.folder / "videos" / f"{name}.avi"


def check_display() -> None:
    """``--show`` needs OpenCV built with a GUI (opencv-python, not the headless wheel) and, on Linux, a display."""
    import os
    import sys

    gui = cv2.getBuildInformation().split("GUI:", 1)[-1].split("\n", 1)[0].strip()
    if gui.upper().startswith("NONE"):
        raise ConfigError("--show needs OpenCV with a GUI: this is opencv-python-headless; install opencv-python "
                          "in its place, or leave --show out and look at the overlays or --save-video")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set")


def _safe(source_id: str) -> str:
    """A file name part for a source: a video file's own name, or the URL / webcam index made file-safe."""
    name = Path(source_id).name if "://" not in source_id else source_id.split("://", 1)[1]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]


def run_stream(auditor: Auditor, sources: Sequence[str], folder: Path, options: StreamOptions | None = None,
               max_frames: int | None = None, duration: float | None = None, save: SaveRule | None = None,
               progress: Callable[[StreamSummary, int], None] | None = None,
               resume: ResumeState | None = None, append: bool = False,
               summary_name: str | None = "summary.json") -> StreamSummary:
    """Score every frame that the readers deliver, in batches of ``auditor.batch_size``, until every source has
    ended, ``max_frames`` frames were scored, ``duration`` seconds passed, or the run is interrupted. With
    ``resume`` (an earlier run of the same folder), video files continue after their last scored frame, files
    read to their end are skipped, and records are appended. ``append`` adds to the folder's records without
    resuming (images and videos in one run); the summary goes to ``summary_name``."""
    options = options or StreamOptions()
    save = save or SaveRule()
    if save.show:
        check_display()
    summary = StreamSummary(folder)
    unscored: dict[str, int] = {}  # frames read but cut by --max-frames, per source
    folder.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    if resume is not None:
        sources = [source for source in sources if source not in resume.ended]
    readers = [VideoReader(source, options, stop, -1 if resume is None else resume.last_frame.get(source, -1))
               for source in sources]
    fps = {reader.source_id: reader for reader in readers}
    writer = _Writer(folder, append=append or resume is not None,
                     fps_of=lambda source: fps[source].fps / options.vid_stride if source in fps else 0.0)
    start = time.perf_counter()
    writer.start()
    for reader in readers:
        reader.start()

    def interrupted():
        summary.stopped_by = summary.stopped_by or "interrupt"

    try:
        with stop_on_interrupt(stop, interrupted):
            _score_until_done(auditor, readers, writer, summary, save, stop, start, max_frames, duration, unscored,
                              progress)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=options.read_timeout + 1)
        _drain_events(readers, summary, writer, unscored)  # the events the readers gave on their way out
        writer.jobs.put(None)
        writer.join()
    summary.seconds = time.perf_counter() - start
    summary.dropped = sum(r.buffer.dropped for r in readers)
    summary.decoded = {r.source_id: r.decoded for r in readers}
    if summary_name:
        (folder / summary_name).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if writer.failure is not None:
        raise writer.failure
    return summary


def _score_until_done(auditor, readers, writer, summary, save, stop, start, max_frames, duration, unscored,
                      progress) -> None:
    """Batches of frames round-robin from the readers until every source has ended or a limit stops them."""
    turn = 0
    while True:
        if duration is not None and time.perf_counter() - start >= duration and not stop.is_set():
            summary.stopped_by = summary.stopped_by or "duration"
            stop.set()
        batch, events, turn = _collect(readers, auditor.batch_size, turn)
        if max_frames is not None:
            keep = max(0, max_frames - summary.ok)
            for frame in batch[keep:]:
                unscored[frame.source_id] = unscored.get(frame.source_id, 0) + 1
            batch = batch[:keep]
        _score(auditor, batch, summary, writer, save)
        for event in events:  # after the frames read before them
            _write_event(event, summary, writer, unscored)
        if batch:
            if max_frames is not None and summary.ok >= max_frames and not stop.is_set():
                summary.stopped_by = "max-frames"
                stop.set()
            if progress is not None:
                progress(summary, sum(r.buffer.depth for r in readers))
        elif all(r.buffer.drained for r in readers):
            return
        else:
            readers[turn % len(readers)].buffer.wait(IDLE_WAIT_S)
        if writer.failure is not None:
            stop.set()
            return


def _collect(readers, size: int, turn: int) -> tuple[list[Frame], list[Frame], int]:
    """Up to ``size`` frames, taken round-robin so that no source starves, and the events met on the way (to be
    written once the frames before them are)."""
    batch: list[Frame] = []
    events: list[Frame] = []
    idle = 0
    while len(batch) < size and idle < len(readers):
        reader = readers[turn % len(readers)]
        turn += 1
        item = reader.buffer.get_nowait()
        if item is None:
            idle += 1
            continue
        idle = 0
        if item.event == "frame":
            batch.append(item)
        else:
            events.append(item)
    return batch, events, turn


def _drain_events(readers, summary: StreamSummary, writer: _Writer, unscored: dict[str, int]) -> None:
    for reader in readers:
        while (item := reader.buffer.get_nowait()) is not None:
            if item.event == "frame":
                unscored[item.source_id] = unscored.get(item.source_id, 0) + 1
            else:
                _write_event(item, summary, writer, unscored)


def _write_event(item: Frame, summary: StreamSummary, writer: _Writer, unscored: dict[str, int]) -> None:
    """An ``end`` only when every frame read from the source was scored: after --max-frames cut some, the source
    is recorded as ``stopped``, so that ``--resume`` goes on with it instead of taking it as done."""
    if item.event == "end" and unscored.get(item.source_id):
        item.event = "stopped"
        item.detail = f"{unscored[item.source_id]} frames read after the run's limit were not scored"
    if item.event == "error":
        summary.errors += 1
        record = {"source_id": item.source_id, "status": "error", "error": f"{item.source_id}: {item.detail}"}
    else:
        summary.events += 1
        record = {"source_id": item.source_id, "status": "event", "event": item.event, "detail": item.detail,
                  "timestamp": round(item.timestamp, 3)}
    writer.jobs.put(_Job(record))


def _score(auditor: Auditor, batch: list[Frame], summary: StreamSummary, writer: _Writer, save: SaveRule) -> None:
    if not batch:
        return
    began = time.perf_counter()
    images = [frame.image for frame in batch]
    results = auditor.classify_arrays(images) if auditor.is_classifier else auditor.audit_arrays(images)
    infer_ms = (time.perf_counter() - began) * 1000 / len(batch)
    for frame, result in zip(batch, results):
        positive = bool(getattr(result, "label", False))
        timings = {"decode_ms": round(frame.decode_ms, 2), "queue_ms": round((began - frame.queued_at) * 1000, 2),
                   "infer_ms": round(infer_ms, 2)}
        record = {"source_id": frame.source_id, "frame": frame.index, "timestamp": round(frame.timestamp, 3),
                  "status": "ok", **result.to_dict(), "timings": timings}
        drawable = not auditor.is_classifier
        writer.jobs.put(_Job(record, frame.image, result, drawable and save.wants(frame, positive),
                             drawable and save.video, drawable and save.show))
        summary.ok += 1
        summary.positives += positive

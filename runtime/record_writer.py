"""The writer stage of a run: one thread behind a bounded queue writes ``results.jsonl`` line by line (each line
flushed) and draws what the ``SaveRule`` asks for (overlays, ``--explain`` maps, raw maps, annotated videos, a
window, the contact sheet), off the path from decoding to inference."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from auditor_rt.runtime.explain import Explanation
from auditor_rt.runtime.frames import Frame, safe_name
from auditor_rt.runtime.legend import with_legend
from auditor_rt.runtime.pictures import MapDisplay, SheetTiles, explain_picture, legend_kind, save_maps
from auditor_rt.runtime.visualize import draw_caption, write_rgb

SHEET_LIMIT = 64
WRITE_QUEUE = 8  # batches waiting for the writer
DEFAULT_VIDEO_FPS = 25.0  # annotated videos of sources that report no frame rate (some live streams)


@dataclass
class SaveRule:
    """What is drawn and saved besides the records: overlays (all, only flagged ones, at most one per video source
    every N seconds), raw maps, an annotated video per source, a window per source."""

    overlays: bool = True
    only_positive: bool = False
    every_n_seconds: float = 0.0
    raw_maps: bool = False
    video: bool = False  # an annotated video per video source, every scored frame
    show: bool = False   # a window per video source (needs a display and OpenCV with a GUI)
    _last: dict[str, float] = field(default_factory=dict)

    def wants_overlay(self, frame: Frame, flagged: bool | None) -> bool:
        if not self.overlays or (self.only_positive and flagged is False):
            return False
        if frame.video and self.every_n_seconds:
            last = self._last.get(frame.source)
            if last is not None and frame.timestamp - last < self.every_n_seconds:
                return False
            self._last[frame.source] = frame.timestamp
        return True


@dataclass
class Scored:
    """A batch for the writer: its frames in record order, the result and explanation of each scored one."""

    frames: list[Frame]
    results: list
    explanations: list
    infer_ms: float
    began: float  # time.perf_counter() when inference started
    reported: int = 0  # frames already told to the progress callback (explained chunks)


class RecordWriter(threading.Thread):
    """Takes ``Scored`` batches from a bounded queue and writes them. The file is opened on the caller's thread,
    so that an unwritable run folder fails the run at once. After an error the thread keeps taking jobs and drops
    them, so the stages feeding it never block; the run then stops and raises ``failure``."""

    def __init__(self, folder: Path, save: SaveRule, display: MapDisplay, append: bool = False,
                 fps_of: Callable[[str], float] = lambda source: 0.0):
        super().__init__(name="writer", daemon=True)
        self.folder, self.save, self.display, self.fps_of = folder, save, display, fps_of
        self.handle = open(folder / "results.jsonl", "a" if append else "w")
        self.jobs: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
        self.failure: BaseException | None = None
        self.sheet = SheetTiles(SHEET_LIMIT)
        self.videos: dict[str, cv2.VideoWriter] = {}

    def run(self) -> None:
        with self.handle:
            while (job := self.jobs.get()) is not None:
                if self.failure is None:
                    try:
                        self._write(job)
                    except Exception as exc:  # noqa: BLE001 - kept, reported by the run, never lost silently
                        self.failure = exc
            for video in self.videos.values():
                video.release()

    def _write(self, job: Scored) -> None:
        results, explanations = iter(job.results), iter(job.explanations)
        for frame in job.frames:
            if frame.scored:
                record = self._scored(frame, next(results), next(explanations, None), job)
            else:
                record = frame.unscored_record()
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()

    def _scored(self, frame: Frame, result, explanation: Explanation | None, job: Scored) -> dict:
        began = time.perf_counter()
        record = {**frame.identity(), "status": "ok", **result.to_record()}
        draw = self.save.wants_overlay(frame, result.flagged)
        tile, legends = [], []
        picture = result.overlay(frame.image, self.display) if draw or self.save.video or self.save.show else None
        if picture is not None:
            note = self.display.heatmap_note
            captioned = draw_caption(picture, result.caption())
            if draw:
                name = Path("overlays") / f"{frame.stem()}.jpg"
                record["overlay"] = self._picture(name, with_legend(captioned, "risk", note))
                tile.append((picture, result.caption(2)))
                legends.append(("risk", note))
            if frame.video:
                self._stream(frame, captioned, record)  # at the source's size: no legend band
        if explanation is not None:
            record["explain"] = explanation.to_dict()
            if draw:
                view, note = explain_picture(frame.image, explanation, self.display)
                caption = f"{explanation.method} | {result.caption()}"
                picture = with_legend(draw_caption(view, caption), legend_kind(explanation), note)
                # PNG: JPEG's chroma subsampling greys out thin red and blue
                name = Path(f"explain_{explanation.method}") / f"{frame.stem()}.png"
                record["explain"]["overlay"] = self._picture(name, picture)
                tile.append((view, f"{explanation.method} {result.caption(2)}"))
                legends.append((legend_kind(explanation), explanation.method))
        if self.save.raw_maps:
            record["maps"] = save_maps(self.folder / "maps", frame.stem(), result, explanation)
        self.sheet.add(tile, legends)
        record["timings"] = {"decode_ms": round(frame.decode_ms, 2),
                             "queue_ms": round(max(0.0, job.began - frame.queued_at) * 1000, 2),
                             "infer_ms": round(job.infer_ms, 2),
                             "draw_ms": round((time.perf_counter() - began) * 1000, 2)}
        return record

    def _picture(self, name: Path, picture: np.ndarray) -> str:
        path = self.folder / name
        path.parent.mkdir(exist_ok=True)
        write_rgb(path, picture)
        return str(path)

    def _stream(self, frame: Frame, picture: np.ndarray, record: dict) -> None:
        """The annotated video (MJPEG in AVI, opened at the source's first frame size) and the window."""
        bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
        if self.save.video:
            path = self.folder / "videos" / f"{_video_name(frame.source)}.avi"
            if frame.source not in self.videos:
                path.parent.mkdir(exist_ok=True)
                fps = self.fps_of(frame.source) or DEFAULT_VIDEO_FPS
                height, width = bgr.shape[:2]
                self.videos[frame.source] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                                            (width, height))
            self.videos[frame.source].write(bgr)
            record["video"] = str(path)
        if self.save.show:
            cv2.imshow(f"auditor-rt: {frame.source}", bgr)
            cv2.waitKey(1)

    def write_sheet(self) -> None:
        sheet = self.sheet.sheet()
        if sheet is not None:
            write_rgb(self.folder / "contact_sheet.png", sheet)


def _video_name(source: str) -> str:
    """clip.mp4 -> clip; a URL or webcam index made file-safe."""
    name = safe_name(source)
    return (name.removesuffix(Path(source).suffix) or name) if "://" not in source else name

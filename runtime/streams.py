"""Video sources for ``infer``: video files, webcams and network streams (RTSP, HTTP MJPEG or video), each read
on its own thread into a bounded buffer.

A reader never invents a frame. A live stream that stalls or drops is reopened with exponential backoff, and
each disconnect, reconnect and final give-up becomes an event, so that it can be recorded. A video file is read
to its end, and its frames are counted, so that records can be checked against them.

Read timeouts use OpenCV's FFmpeg options (``CAP_PROP_OPEN_TIMEOUT_MSEC``, ``CAP_PROP_READ_TIMEOUT_MSEC``), which
cut a network read that blocks. A stalled webcam has no such option; its backend returns a failed read itself.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.frames import Frame

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".mjpeg", ".mjpg", ".3gp"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
BUFFER_POLICIES = ("all", "latest")
MAX_BACKOFF_S = 30.0


def is_live_source(argument: str) -> bool:
    """A webcam index or a stream URL."""
    return argument.isdigit() or argument.lower().startswith(STREAM_SCHEMES)


def is_video_source(argument: str) -> bool:
    """A video file, a webcam index or a stream URL (not an image file, folder or glob)."""
    return is_live_source(argument) or Path(argument).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class StreamOptions:
    vid_stride: int = 1           # keep every Nth frame
    buffer: str = "all"           # "all": every frame, the reader waits; "latest": only the newest, drops counted
    read_timeout: float = 5.0     # seconds before a blocked network read is cut
    reconnect_attempts: int = 5   # reopen attempts after a live stream drops, then the source ends with an error
    reconnect_delay: float = 1.0  # seconds before the first attempt, doubled for each next one
    queue_size: int = 8           # frames held per source with buffer "all"

    def __post_init__(self):
        if self.buffer not in BUFFER_POLICIES:
            raise ConfigError(f"--stream-buffer {self.buffer!r}: choose {' or '.join(BUFFER_POLICIES)}")
        if self.vid_stride < 1 or self.queue_size < 1 or self.reconnect_attempts < 0:
            raise ConfigError("--vid-stride and the queue size must be at least 1, --reconnect-attempts at least 0")
        if self.read_timeout <= 0 or self.reconnect_delay < 0:
            raise ConfigError("--read-timeout must be positive and --reconnect-delay not negative")


class FrameBuffer:
    """Between one reader thread and the consumer, in the order the reader produced them. Frames are bounded
    (``all``: the reader waits for room; ``latest``: a new frame replaces the unread ones and the drops are
    counted); events are never dropped, and never overtake the frames read before them."""

    def __init__(self, policy: str = "all", size: int = 8):
        self.policy, self.size = policy, (1 if policy == "latest" else size)
        self.items: collections.deque[Frame] = collections.deque()
        self.frames = 0  # frames among the items
        self.dropped = 0
        self.closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """False when ``stop`` was set while waiting for room (the frame is then not queued)."""
        with self._cond:
            if frame.event != "frame":
                self.items.append(frame)
            elif self.policy == "latest":
                if self.frames:
                    self.dropped += self.frames
                    self.items = collections.deque(item for item in self.items if item.event != "frame")
                self.items.append(frame)
                self.frames = 1
            else:
                while self.frames >= self.size:
                    if stop.is_set():
                        return False
                    self._cond.wait(0.05)
                self.items.append(frame)
                self.frames += 1
            self._cond.notify_all()
            return True

    def get_nowait(self) -> Frame | None:
        with self._cond:
            if not self.items:
                return None
            item = self.items.popleft()
            if item.event == "frame":
                self.frames -= 1
            self._cond.notify_all()
            return item

    def wait(self, timeout: float) -> None:
        with self._cond:
            if not self.items and not self.closed:
                self._cond.wait(timeout)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        with self._cond:
            return self.closed and not self.items


def _open_capture(target: str | int, options: StreamOptions):
    import cv2

    if isinstance(target, int):
        return cv2.VideoCapture(target)
    milliseconds = int(options.read_timeout * 1000)
    return cv2.VideoCapture(target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds,
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds])


class VideoReader(threading.Thread):
    """Reads one video source into a ``FrameBuffer`` until it ends (an ``end`` event), gives up (``error``), or
    ``stop`` is set (``stopped``)."""

    def __init__(self, source_id: str, options: StreamOptions, stop: threading.Event, skip_through: int = -1):
        """``skip_through``: for a video file, frames up to this index were scored by an earlier run (``--resume``);
        they are read past without decoding and without records."""
        super().__init__(name=f"reader {source_id}", daemon=True)
        self.source_id, self.options, self.stop_event = source_id, options, stop
        self.live = is_live_source(source_id)
        self.target: str | int = int(source_id) if source_id.isdigit() else source_id
        self.skip_through = -1 if self.live else skip_through
        self.buffer = FrameBuffer(options.buffer, options.queue_size)
        self.decoded = 0       # frames read from the source (before the stride)
        self.fps = 0.0         # the frame rate the source reports, once opened (0 when it reports none)
        self._start = time.monotonic()

    def _emit(self, event: str, detail: str = "") -> None:
        self.buffer.put(Frame(self.source_id, -1, time.monotonic() - self._start, None, event, detail, video=True),
                        self.stop_event)

    def run(self) -> None:
        try:
            self._read_all()
        except Exception as exc:  # a reader must end with a record, never silently
            self._emit("error", f"reader failed: {type(exc).__name__}: {exc}")
        finally:
            self.buffer.close()

    def _read_all(self) -> None:
        import cv2

        if not self.live and not Path(self.source_id).is_file():
            self._emit("error", "no such video file")
            return
        capture = _open_capture(self.target, self.options)
        if not capture.isOpened():
            capture.release()
            if not self.live:
                self._emit("error", "cannot open the video (unknown format, or not a video)")
                return
            capture = self._reconnect(initial=True)
            if capture is None:
                return
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        index = -1
        while not self.stop_event.is_set():
            stride_skip = (index + 1) % self.options.vid_stride != 0 or index + 1 <= self.skip_through
            if stride_skip and not self.live:
                ok = capture.grab()  # no decode for frames the stride skips
                frame = None
            else:
                began = time.perf_counter()
                ok, frame = capture.read()
            if not ok:
                capture.release()
                if not self.live:
                    self._emit("end", f"{self.decoded} frames")
                    return
                self._emit("disconnect", "the stream stopped delivering frames")
                capture = self._reconnect()
                if capture is None:
                    return
                continue
            index += 1
            self.decoded += 1
            if stride_skip:
                continue
            if self.live:
                timestamp = time.monotonic() - self._start
            else:
                timestamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
            now = time.perf_counter()
            item = Frame(self.source_id, index, timestamp, rgb, decode_ms=(now - began) * 1000, queued_at=now, video=True)
            if not self.buffer.put(item, self.stop_event):
                break
        capture.release()
        # The run stopped this source before it ended (--max-frames, --duration, an interrupt): say so, so that
        # every run's record is the same whether or not the reader was ahead of the stop.
        self._emit("stopped", f"the run stopped after {self.decoded} frames were read")

    def _reconnect(self, initial: bool = False):
        """Reopen with exponential backoff: the new capture (after a ``reconnect`` event), or None once the
        attempts are spent (after an ``error`` event) or the run stops (after a ``stopped`` event)."""
        delay = self.options.reconnect_delay
        for attempt in range(1, self.options.reconnect_attempts + 1):
            if self.stop_event.wait(min(delay, MAX_BACKOFF_S)):
                self._emit("stopped", f"the run stopped while reconnecting, after {self.decoded} frames were read")
                return None
            delay *= 2
            capture = _open_capture(self.target, self.options)
            if capture.isOpened():
                self._emit("reconnect", f"{'opened' if initial else 'reopened'} after {attempt} attempt(s)")
                return capture
            capture.release()
        what = "could not be opened" if initial else "did not come back"
        self._emit("error", f"the stream {what} after {self.options.reconnect_attempts} reconnect attempt(s)")
        return None

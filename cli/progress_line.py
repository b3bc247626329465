"""One progress line for long runs on stderr, like ``yolo predict``: count/total, rate, ETA. On a terminal it is
redrawn in place; in a log (no terminal) it is a new line at most every ``interval`` seconds, and at the end, so a
96-second IG run still says where it is without flooding a CI log."""

from __future__ import annotations

import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLine:
    def __init__(self, total: int, stream: TextIO, label: str = "auditing", unit: str = "img",
                 interval: float = 5.0, clock=time.perf_counter):
        self.total, self.stream, self.label, self.unit = total, stream, label, unit
        self.interval, self.clock = interval, clock
        self.done = 0
        self.began = clock()
        self.last_line = None  # when the last line was written off a terminal
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def text(self, extra: str = "") -> str:
        elapsed = self.clock() - self.began
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done // self.total}%)" if self.total else ""
        parts = [f"{self.label} {self.done}/{self.total}{share}", f"{rate:.2f} {self.unit}/s"]
        if self.done < self.total:
            parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}" if rate > 0 else "ETA ?")
        else:
            parts.append(f"took {format_seconds(elapsed)}")
        return "  ".join(parts + ([extra] if extra else []))

    def update(self, count: int, extra: str = "") -> None:
        self.done += count
        now = self.clock()
        if self.tty:
            self.stream.write("\r" + self.text(extra) + "\033[K")
            self.stream.flush()
        elif self.done >= self.total or self.last_line is None or now - self.last_line >= self.interval:
            self.last_line = now
            self.stream.write(self.text(extra) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()

"""Progress lines for long jobs made of a few items (graphs, references), each run in named stages.

Export and verify spend minutes on a handful of graphs, one stage at a time (tracing, ONNX conversion, passes,
parity); a user watching a silent terminal cannot tell a slow step from a hung one. ``Progress`` writes one line
when a stage starts and one when an item ends, with the item's name, its stage times and an estimate of the time
left, to stderr (stdout stays for results and ``--json``). On a terminal the stage line is rewritten in place;
in a log file every line stays. It also keeps the seconds of every stage, which benchmarks and reports read.

    progress = Progress(["audit", "ig"], weights={"ig": 8.0}, title="export")
    with progress.item("ig"):
        with progress.stage("tracing"):
            ...
        progress.note("IG completeness gap 14% ...")
    progress.seconds["ig"]["tracing"]  # -> 12.3

The time left is the time per unit of weight of the items done so far, times the weight still to do (the items
not started, plus the current one less its time so far). Weights say how heavy an item is relative to the others
(IG with 32 steps runs 34 images per image); with none given, every item weighs 1.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import IO, Iterator, Sequence


def format_duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min: coarse enough to read at a glance."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """Stage and item lines with an ETA; ``enabled=False`` keeps the timings and prints nothing."""

    def __init__(self, items: Sequence[str], weights: dict[str, float] | None = None, title: str = "",
                 stream: IO[str] | None = None, enabled: bool = True):
        self.items = list(items)
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in self.items}
        self.title, self.enabled = title, enabled
        self._stream = stream
        self.seconds: dict[str, dict[str, float]] = {}
        self._done_weight = self._done_seconds = 0.0
        self._current: str | None = None
        self._item_start = 0.0
        self._pending_line = False  # a rewritable stage line is on screen (terminal only)

    @classmethod
    def silent(cls, items: Sequence[str] = ()) -> "Progress":
        return cls(items, enabled=False)

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr  # looked up late: pytest swaps stderr

    def _position(self, name: str) -> str:
        if name not in self.items:
            self.items.append(name)
            self.weights[name] = 1.0
        return f"[{self.items.index(name) + 1}/{len(self.items)}] {name}"

    def eta(self) -> float | None:
        """Seconds left, or None before the first item has finished."""
        if not self._done_weight:
            return None
        rate = self._done_seconds / self._done_weight
        left = sum(self.weights[name] for name in self.items if name not in self.seconds or name == self._current)
        elapsed = time.perf_counter() - self._item_start if self._current else 0.0
        return max(0.0, rate * left - elapsed)

    def _eta_text(self) -> str:
        eta = self.eta()
        return "" if eta is None else f"; about {format_duration(eta)} left"

    def _write(self, line: str, final: bool) -> None:
        if not self.enabled:
            return
        stream = self.stream
        live = bool(getattr(stream, "isatty", lambda: False)())
        prefix = f"{self.title}: " if self.title else ""
        if live:
            stream.write("\r\033[K" + prefix + line + ("\n" if final else ""))
            self._pending_line = not final
        else:
            stream.write(prefix + line + "\n")
        stream.flush()

    @contextlib.contextmanager
    def item(self, name: str) -> Iterator[None]:
        """One item; its end line gives its time, its slowest stages and the time left."""
        position = self._position(name)
        self._current, self._item_start = name, time.perf_counter()
        self.seconds.setdefault(name, {})
        try:
            yield
        finally:
            took = time.perf_counter() - self._item_start
            self._current = None
            self._done_weight += self.weights[name]
            self._done_seconds += took
            stages = ", ".join(f"{stage} {format_duration(s)}" for stage, s in self.seconds[name].items())
            self._write(f"{position}: {format_duration(took)}" + (f" ({stages})" if stages else "")
                        + self._eta_text(), final=True)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A stage of the current item (or of the whole job, outside any item); its seconds add up per name."""
        owner = self._current or "(job)"
        label = self._position(owner) if self._current else owner
        self._write(f"{label}: {name}...{self._eta_text()}", final=False)
        start = time.perf_counter()
        try:
            yield
        finally:
            stages = self.seconds.setdefault(owner, {})
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - start

    def note(self, message: str) -> None:
        """A line of its own (a warning or a finding), kept on screen."""
        self._write(message, final=True)

    def total(self, stage: str | None = None) -> float:
        """Seconds over all items, of one stage or of every stage."""
        return sum(s for stages in self.seconds.values() for name, s in stages.items() if stage in (None, name))

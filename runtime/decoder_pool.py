"""Decode untrusted images in a small pool of decoder processes, so that no file can take the caller down.

OpenCV's C++ decoders parse whatever bytes they are given, and a hostile or damaged file can crash them (a mutated
APNG segfaults OpenCV 5.1's PNG reader), hang them (a variant of it deadlocks with no CPU use), or make them
allocate gigabytes (a PNG text chunk declaring 4 GB). In ``infer`` or ``serve`` each of those would cost every
result of the run, or every request in flight. Here each decode runs in a ``decoder_worker`` process instead:
- a crash costs that image a ``DecoderCrashError``; the process is replaced and the caller goes on;
- a decode past the deadline is killed and costs a ``DecodeTooCostlyError``; so is one past the memory budget
  (the worker's address space is capped, so the allocation fails at once instead of filling the machine);
- the pixels come back through shared memory (a memfd per process, mapped on both sides), and several files go
  in one round trip (``decode_many``), so isolation costs one copy of each decoded image and a share of a pipe
  round trip, not a serialisation: within a few percent of decoding in-process (docs/decoding.md).

The pool is thread-safe: ``decode`` takes an idle worker, or waits for one. Callers on N threads keep N workers
busy, which is how ``infer``'s decode stage and ``serve``'s thread pool use it.
"""

from __future__ import annotations

import mmap
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from auditor_rt.runtime.decoder_process import DecoderProcess
from auditor_rt.runtime.decoder_protocol import CONTROL, PeerGone, read_control, write_message
from auditor_rt.runtime.errors import (DecodeTooCostlyError, DecoderCrashError, DecoderUnavailableError,
                                       ImageDecodeError, ImageTooLargeError)
from auditor_rt.runtime.imageio_limits import DEFAULT_MAX_PIXELS, decode_memory_budget

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
DEFAULT_DEADLINE_S = 20.0   # a 100-megapixel PNG or progressive JPEG decodes in 1-4 s on one core
START_DEADLINE_S = 60.0     # python + numpy + cv2 import, on a loaded machine
START_ATTEMPTS = 3          # processes that die while starting, in a row, before a decode gives up
STALL_S = 1.0               # asleep with no CPU use this long while decoding bytes in memory: a deadlock
STALL_CHECK_S = 0.25        # how often a decode that has not answered is looked at
RELEASE_BYTES = 64 << 20    # shared pages past this are handed back to the system after each round trip
ERRORS = {"too_large": ImageTooLargeError, "too_costly": DecodeTooCostlyError}


@dataclass
class Decoded:
    """What a decode gives: the image at its own size (None unless asked for), the resized copy (None unless
    asked for), and the original (height, width)."""

    image: np.ndarray | None
    resized: np.ndarray | None
    size: tuple[int, int]


class DecoderPool:
    """``workers`` decoder processes (default: one per core, up to 4; see the module docstring). ``max_pixels`` bounds each image, the memory
    budget follows from it (``decode_memory_budget``), and ``deadline_s`` bounds each decode's wall time."""

    def __init__(self, workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, deadline_s: float = DEFAULT_DEADLINE_S,
                 full_images: bool = True, resize: tuple[int, int] | None = None, memory: int | None = None,
                 tuned_malloc: bool = True):
        workers = DEFAULT_WORKERS if workers is None else workers
        if workers < 1:
            raise ValueError("a DecoderPool needs at least one worker")
        self.workers, self.max_pixels, self.deadline_s = workers, int(max_pixels), float(deadline_s)
        self.full_images, self.resize = full_images, tuple(resize) if resize else None
        resized_bytes = resize[0] * resize[1] * 3 if resize else 0
        self.capacity = (self.max_pixels * 3 if full_images else 0) + resized_bytes
        self.memory = memory if memory is not None else decode_memory_budget(self.max_pixels)
        self.tuned_malloc = tuned_malloc
        self.crashes = self.timeouts = 0
        self._idle: queue.SimpleQueue[DecoderProcess] = queue.SimpleQueue()
        self._all: set[DecoderProcess] = set()
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(workers):
            self._idle.put(self._spawn())

    # ---- public ------------------------------------------------------------------------------------------------------

    def decode(self, source, name: str | None = None) -> Decoded:
        """Decode a path (read by the worker) or encoded bytes. Raises ``ImageDecodeError`` and its kinds:
        ``ImageTooLargeError``, ``DecodeTooCostlyError`` (memory or deadline), ``DecoderCrashError``."""
        outcome = self.decode_many([source], [name])[0]
        if isinstance(outcome, ImageDecodeError):
            raise outcome
        return outcome

    def decode_many(self, sources, names=None) -> list:
        """Decode several sources with one round trip to one process (at 224 px a round trip costs about a third
        of a decode). Each source gets its ``Decoded`` or its ``ImageDecodeError``, in order. A crash or a
        deadline is blamed on the item the process had started; the others go to a fresh process."""
        if self._closed:
            raise RuntimeError("the DecoderPool is closed")
        items = [self._item(source, name) for source, name in zip(sources, names or [None] * len(sources))]
        outcomes: list = [None] * len(items)
        todo = list(range(len(items)))
        failed_starts = 0
        while todo:
            process = self._idle.get()
            if not process.alive():  # died while idle (killed from outside): not an image's doing
                process = self._replace(process)
            process.clean = False
            try:
                settled = self._run(process, [items[index] for index in todo])
            except DecoderUnavailableError:  # died while starting (killed from outside, out of memory): retry
                failed_starts += 1
                if failed_starts >= START_ATTEMPTS:
                    raise
                settled = {}
            finally:
                if not process.clean:  # it crashed, hung, or was interrupted mid-message: start afresh
                    process = self._replace(process)
                self._idle.put(process)
            for position, outcome in settled.items():
                outcomes[todo[position]] = outcome
            todo = [index for position, index in enumerate(todo) if position not in settled]
        return outcomes

    def warm_up(self) -> None:
        """Wait until every process has started (python, numpy and OpenCV imported), so that the first images do
        not pay for it."""
        taken = [self._idle.get() for _ in range(self.workers)]
        try:
            for position in range(len(taken)):
                for attempt in range(START_ATTEMPTS):
                    try:
                        if not taken[position].ready:
                            self._await_ready(taken[position])
                        break
                    except DecoderUnavailableError:
                        dead, taken[position] = taken[position], None  # _replace gives it back if it must
                        taken[position] = self._replace(dead)
                        if attempt == START_ATTEMPTS - 1:
                            raise
        finally:
            for process in taken:
                if process is not None:
                    self._idle.put(process)

    def pids(self) -> list[int]:
        """The decoder processes' ids (for monitoring, and for tests that kill one on purpose)."""
        with self._lock:
            return [process.pid for process in self._all]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            processes, self._all = list(self._all), set()
        for process in processes:
            process.close()

    def __enter__(self) -> "DecoderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- inside ------------------------------------------------------------------------------------------------------

    def _spawn(self) -> DecoderProcess:
        try:
            process = DecoderProcess(self.capacity, self.memory, self.max_pixels, self.tuned_malloc)
        except OSError as exc:  # out of processes, memory or file descriptors
            raise DecoderUnavailableError(f"cannot start an image decoder process ({exc.strerror or exc}); is "
                                          "the machine out of processes or memory?") from None
        with self._lock:
            self._all.add(process)
        return process

    def _replace(self, process: DecoderProcess) -> DecoderProcess:
        """A fresh process in place of ``process``. If none can start, the dead one is what comes back: the pool
        keeps its size, and the next call that takes it tries again."""
        process.kill()
        if self._closed:
            return process
        try:
            fresh = self._spawn()
        except DecoderUnavailableError:
            self._idle.put(process)
            raise
        with self._lock:
            self._all.discard(process)
        return fresh

    def _item(self, source, name: str | None) -> tuple[dict, memoryview | None, str]:
        """(the request item, its encoded bytes or None, the name for messages) of a path or a buffer."""
        item = {"max_pixels": self.max_pixels, "full": self.full_images,
                "resize": list(self.resize) if self.resize else None}
        if isinstance(source, (str, os.PathLike)):
            item["path"] = os.fspath(source)
            return item, None, name or item["path"]
        data = memoryview(source).cast("B")
        item.update(name=name or "buffer", bytes=len(data))
        return item, data, item["name"]

    def _run(self, process: DecoderProcess, items: list) -> dict:
        """Send ``items`` to ``process`` in one message; {position: outcome} for the items it settled: all of them,
        or, after a crash or a deadline, only the one the process had started (``process.clean`` stays False)."""
        if not process.ready:
            self._await_ready(process)
        payloads = [data for _, data, _ in items if data is not None]
        payload = b"".join(payloads) if len(payloads) > 1 else (payloads[0] if payloads else None)
        started = self._mark_sent(process)
        try:
            write_message(process.requests, {"items": [item for item, _, _ in items]}, payload)
        except PeerGone:
            return {0: self._crashed(process, items[0][2])}
        stopped = self._watch(process, started, items)
        if stopped is not None:
            return stopped
        try:
            reply, pixels = process.replies.read()
        except (PeerGone, ValueError):
            position = max(read_control(process.shared)[0], 1) - 1
            return {position: self._crashed(process, items[position][2])}
        process.clean = True
        answers = reply.get("items", [])
        settled = {position: self._outcome(process, answer, pixels, items[position][2])
                   for position, answer in enumerate(answers[:len(items)])}
        for position in range(len(answers), len(items)):  # a broken reply: no item may be left unsettled
            settled[position] = ImageDecodeError(f"{items[position][2]}: the decoder gave no answer for this file")
        used = max((answer.get("end", 0) for answer in answers), default=0)
        if used > RELEASE_BYTES and hasattr(mmap, "MADV_REMOVE"):
            process.shared.madvise(mmap.MADV_REMOVE, 0, used)  # huge images' pages go back to the system
        return settled

    def _watch(self, process: DecoderProcess, started: tuple, items: list) -> dict | None:
        """Wait for the reply. None when it is there (or the pipe closed); else {position: error} for the item
        that went past its deadline, or that deadlocked (asleep, no CPU use for ``STALL_S`` while decoding)."""
        idle_since = None  # (CPU seconds, when first seen) while the current item's decoder uses none
        while not process.wait_readable(min(STALL_CHECK_S, started[1] + self.deadline_s - time.monotonic())):
            now = read_control(process.shared)
            if now[:2] != started[:2]:  # the next item has started
                started, idle_since = now, None
                continue
            position = max(now[0], 1) - 1
            name = items[position][2]
            if time.monotonic() >= started[1] + self.deadline_s:
                self.timeouts += 1
                return {position: DecodeTooCostlyError(f"{name}: too costly to decode: the decoder took longer than "
                                                       f"the deadline of {self.deadline_s:g} s and was stopped")}
            usage = process.cpu_and_state() if now[2] else None
            if usage is None or usage[1] != "S" or (idle_since and usage[0] != idle_since[0]):
                idle_since = None
            elif idle_since is None:
                idle_since = (usage[0], time.monotonic())
            elif time.monotonic() - idle_since[1] >= STALL_S:
                self.crashes += 1
                return {position: DecoderCrashError(
                    f"{name}: the image decoder hung on this file (asleep with no CPU use for {STALL_S:g} s while "
                    "decoding: a deadlock) and was stopped; the file is damaged or hostile, and nothing else was "
                    "affected")}
        return None

    @staticmethod
    def _mark_sent(process: DecoderProcess) -> tuple[int, float, int]:
        """Reset the control block: no item started, the clock running from now."""
        started = (0, time.monotonic(), 0)
        CONTROL.pack_into(process.shared, 0, *started)
        return started

    def _outcome(self, process: DecoderProcess, reply: dict, pixels, name: str):
        if not reply.get("ok"):
            error = ERRORS.get(reply.get("kind"), ImageDecodeError)
            message = reply.get("message", "not decoded")
            if reply.get("kind") == "internal":
                message = f"{name}: the decoder failed on this file ({message})"
            return error(message)
        shapes = [tuple(shape) for shape in reply["shapes"]]
        shared = "offset" in reply
        source, offset = (process.shared, reply["offset"]) if shared else (pixels, reply.get("payload_at", 0))
        arrays = []
        for height, width in shapes:
            count = height * width * 3
            arrays.append(np.frombuffer(source, np.uint8, count, offset).reshape(height, width, 3).copy())
            offset += count
        reply["end"] = offset if shared else 0
        image = arrays.pop(0) if self.full_images else None
        resized = arrays.pop(0) if self.resize else None
        return Decoded(image, resized, tuple(reply["size"]))

    def _await_ready(self, process: DecoderProcess) -> None:
        if not process.wait_readable(START_DEADLINE_S):
            raise DecoderUnavailableError(f"an image decoder process did not start within {START_DEADLINE_S:g} s; "
                                          "is the machine out of memory or processes?")
        try:
            process.replies.read()
        except PeerGone:
            raise DecoderUnavailableError(
                f"an image decoder process failed to start: it {process.death()} (run `{sys.executable} -m "
                "auditor_rt.runtime.decoder_worker --memory 1000000000` to see why)") from None
        process.ready = True

    def _crashed(self, process: DecoderProcess, name: str) -> DecoderCrashError:
        self.crashes += 1
        return DecoderCrashError(f"{name}: the image decoder crashed on this file (it {process.death()}); the "
                                 "file is damaged or hostile, and nothing else was affected")

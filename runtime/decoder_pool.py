"""Decode untrusted images in a small pool of decoder processes, so that no file can take the caller down.

OpenCV's C++ decoders parse whatever bytes they are given, and a hostile or damaged file can crash them (a mutated
APNG segfaults OpenCV 5.1's PNG reader), hang them (a variant of it deadlocks with no CPU use), or make them
allocate gigabytes (a PNG text chunk declaring 4 GB). In ``infer`` or ``serve`` each of those would cost every
result of the run, or every request in flight. Here each decode runs in a ``decoder_worker`` process instead:
- a crash costs that image a ``DecoderCrashError``; the process is replaced and the caller goes on;
- a decode past the deadline is killed and costs a ``DecodeTooCostlyError``; so is one past the memory budget
  (the worker's address space is capped, so the allocation fails at once instead of filling the machine);
- the pixels come back through shared memory (a memfd per worker, mapped on both sides), so isolation costs one
  copy of the decoded image and a pipe round trip, not a serialisation.

The pool is thread-safe: ``decode`` takes an idle worker, or waits for one. Callers on N threads keep N workers
busy, which is how ``infer``'s decode stage and ``serve``'s thread pool use it.
"""

from __future__ import annotations

import mmap
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

import numpy as np

from auditor_rt.runtime.decoder_protocol import MessageReader, PeerGone, write_message
from auditor_rt.runtime.errors import (DecodeTooCostlyError, DecoderCrashError, DecoderUnavailableError,
                                       ImageDecodeError, ImageTooLargeError)
from auditor_rt.runtime.imageio_limits import DEFAULT_MAX_PIXELS, decode_memory_budget

DEFAULT_DEADLINE_S = 20.0   # a 100-megapixel PNG or progressive JPEG decodes in 1-4 s on one core
START_DEADLINE_S = 60.0     # python + numpy + cv2 import, on a loaded machine
RELEASE_BYTES = 64 << 20    # shared pages past this are handed back to the system after each decode
# glibc gives each buffer over its mmap threshold fresh pages from the kernel, and raises the threshold only to the
# size of the last one freed, so every decoded image of the same size faults in afresh: at 1080p that is about
# 1,500 page faults, 40% of a decode's CPU on the machines measured (benchmarks/decode.py). A fixed threshold of
# 32 MiB (glibc's maximum) keeps buffers up to 4K in the heap, where the next decode reuses them; past 64 MiB of
# free heap, memory goes back to the system.
MALLOC_TUNING = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864"
ERRORS = {"too_large": ImageTooLargeError, "too_costly": DecodeTooCostlyError}


@dataclass
class Decoded:
    """What a decode gives: the image at its own size (None unless asked for), the resized copy (None unless
    asked for), and the original (height, width)."""

    image: np.ndarray | None
    resized: np.ndarray | None
    size: tuple[int, int]


class _Process:
    """One decoder process, its pipes and its shared memory."""

    def __init__(self, capacity: int, memory: int, max_pixels: int, tuned_malloc: bool = True):
        self.capacity = capacity
        self.fd = os.memfd_create("auditor-rt-decoder") if hasattr(os, "memfd_create") and capacity else -1
        self.shared = None
        if self.fd >= 0:
            os.ftruncate(self.fd, capacity)
            self.shared = mmap.mmap(self.fd, capacity)
        command = [sys.executable, "-m", "auditor_rt.runtime.decoder_worker", "--shm-fd", str(self.fd),
                   "--capacity", str(capacity if self.fd >= 0 else 0), "--memory", str(memory)]
        debug = bool(os.environ.get("OPENCV_LOG_LEVEL"))
        # OpenCV's own pixel limit (read once, at import) follows the pool's, so that neither refuses first.
        environment = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": str(max_pixels)}
        if tuned_malloc:
            environment["GLIBC_TUNABLES"] = ":".join(filter(None, [os.environ.get("GLIBC_TUNABLES"), MALLOC_TUNING]))
        self.popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                      env=environment, stderr=None if debug else subprocess.DEVNULL,
                                      pass_fds=(self.fd,) if self.fd >= 0 else (), start_new_session=True)
        self.requests = self.popen.stdin.fileno()
        self.replies = MessageReader(self.popen.stdout.fileno())
        self.ready = False
        self.clean = True  # False from a request until its whole reply is read

    def wait_readable(self, seconds: float) -> bool:
        if self.replies.buffered():
            return True
        readable, _, _ = select.select([self.replies.fd], [], [], max(0.0, seconds))
        return bool(readable)

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.kill()
            except OSError:
                pass
        for stream in (self.popen.stdin, self.popen.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.shared is not None:
            self.shared.close()
            os.close(self.fd)
            self.shared = None

    def close(self, grace: float = 2.0) -> None:
        """Ask the process to end (its stdin closes), then make sure it has."""
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def death(self) -> str:
        """How the process ended, in words, for the error of the image it was decoding."""
        try:
            code = self.popen.wait(2)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"


class DecoderPool:
    """``workers`` decoder processes (see the module docstring). ``max_pixels`` bounds each image, the memory
    budget follows from it (``decode_memory_budget``), and ``deadline_s`` bounds each decode's wall time."""

    def __init__(self, workers: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS, deadline_s: float = DEFAULT_DEADLINE_S,
                 full_images: bool = True, resize: tuple[int, int] | None = None, memory: int | None = None,
                 tuned_malloc: bool = True):
        if workers < 1:
            raise ValueError("a DecoderPool needs at least one worker")
        self.workers, self.max_pixels, self.deadline_s = workers, int(max_pixels), float(deadline_s)
        self.full_images, self.resize = full_images, tuple(resize) if resize else None
        resized_bytes = resize[0] * resize[1] * 3 if resize else 0
        self.capacity = (self.max_pixels * 3 if full_images else 0) + resized_bytes
        self.memory = memory if memory is not None else decode_memory_budget(self.max_pixels)
        self.tuned_malloc = tuned_malloc
        self.crashes = self.timeouts = 0
        self._idle: queue.SimpleQueue[_Process] = queue.SimpleQueue()
        self._all: set[_Process] = set()
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
        """Decode several sources with one round trip to one process (at 224 px the round trip costs about a third
        of a decode). Each source gets its ``Decoded`` or its ``ImageDecodeError``, in order; after a crash or a
        deadline, the sources not yet decoded go to a fresh process, and nothing is blamed on them."""
        if self._closed:
            raise RuntimeError("the DecoderPool is closed")
        items = [self._item(source, name) for source, name in zip(sources, names or [None] * len(sources))]
        outcomes: list = []
        while len(outcomes) < len(items):
            process = self._idle.get()
            if process.popen.poll() is not None:  # died while idle (killed from outside): not an image's doing
                process = self._replace(process)
            process.clean = False
            try:
                self._run(process, items[len(outcomes):], outcomes)
            finally:
                if not process.clean:  # it crashed, hung, or was interrupted mid-message: start afresh
                    process = self._replace(process)
                self._idle.put(process)
        return outcomes

    def warm_up(self) -> None:
        """Wait until every process has started (python, numpy and OpenCV imported), so that the first images do
        not pay for it."""
        taken = [self._idle.get() for _ in range(self.workers)]
        try:
            for process in taken:
                if not process.ready:
                    self._await_ready(process)
        finally:
            for process in taken:
                self._idle.put(process)

    def pids(self) -> list[int]:
        """The decoder processes' ids (for monitoring, and for tests that kill one on purpose)."""
        with self._lock:
            return [process.popen.pid for process in self._all]

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

    def _spawn(self) -> _Process:
        process = _Process(self.capacity, self.memory, self.max_pixels, self.tuned_malloc)
        with self._lock:
            self._all.add(process)
        return process

    def _replace(self, process: _Process) -> _Process:
        process.kill()
        with self._lock:
            self._all.discard(process)
        if self._closed:
            return process
        return self._spawn()

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

    def _run(self, process: _Process, items: list, outcomes: list) -> None:
        """Send ``items`` to ``process`` in one message and append an outcome to ``outcomes`` for each reply. A
        crash or a deadline ends the batch at the item it happened on (``process.clean`` stays False)."""
        if not process.ready:
            self._await_ready(process)
        payloads = [data for _, data, _ in items if data is not None]
        payload = b"".join(payloads) if len(payloads) > 1 else (payloads[0] if payloads else None)
        try:
            write_message(process.requests, {"items": [item for item, _, _ in items]}, payload)
        except PeerGone:
            outcomes.append(self._crashed(process, items[0][2]))
            return
        used = 0
        for _, _, name in items:
            if not process.wait_readable(self.deadline_s):
                self.timeouts += 1
                outcomes.append(DecodeTooCostlyError(f"{name}: too costly to decode: the decoder took longer than "
                                                     f"the deadline of {self.deadline_s:g} s and was stopped"))
                return
            try:
                reply, pixels = process.replies.read()
            except (PeerGone, ValueError):
                outcomes.append(self._crashed(process, name))
                return
            outcomes.append(self._outcome(process, reply, pixels, name))
            used = max(used, reply.get("end", 0))
        process.clean = True
        if used > RELEASE_BYTES and hasattr(mmap, "MADV_REMOVE"):
            process.shared.madvise(mmap.MADV_REMOVE, 0, used)  # huge images' pages go back to the system

    def _outcome(self, process: _Process, reply: dict, pixels, name: str):
        if not reply.get("ok"):
            error = ERRORS.get(reply.get("kind"), ImageDecodeError)
            message = reply.get("message", "not decoded")
            if reply.get("kind") == "internal":
                message = f"{name}: the decoder failed on this file ({message})"
            return error(message)
        shapes = [tuple(shape) for shape in reply["shapes"]]
        shared = "offset" in reply
        source, offset = (process.shared, reply["offset"]) if shared else (pixels, 0)
        arrays = []
        for height, width in shapes:
            count = height * width * 3
            arrays.append(np.frombuffer(source, np.uint8, count, offset).reshape(height, width, 3).copy())
            offset += count
        reply["end"] = offset if shared else 0
        image = arrays.pop(0) if self.full_images else None
        resized = arrays.pop(0) if self.resize else None
        return Decoded(image, resized, tuple(reply["size"]))

    def _await_ready(self, process: _Process) -> None:
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

    def _crashed(self, process: _Process, name: str) -> DecoderCrashError:
        self.crashes += 1
        return DecoderCrashError(f"{name}: the image decoder crashed on this file (it {process.death()}); the "
                                 "file is damaged or hostile, and nothing else was affected")

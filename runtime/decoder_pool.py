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

import io
import mmap
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from auditor_rt.runtime.decoder_protocol import PeerGone, read_message, write_message
from auditor_rt.runtime.errors import (DecodeTooCostlyError, DecoderCrashError, ImageDecodeError,
                                       ImageTooLargeError)
from auditor_rt.runtime.imageio_limits import DEFAULT_MAX_PIXELS, decode_memory_budget

DEFAULT_DEADLINE_S = 20.0   # a 100-megapixel PNG or progressive JPEG decodes in 1-4 s on one core
START_DEADLINE_S = 60.0     # python + numpy + cv2 import, on a loaded machine
RELEASE_BYTES = 64 << 20    # shared pages past this are handed back to the system after each decode
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

    def __init__(self, capacity: int, memory: int, max_pixels: int):
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
        self.popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                      env=environment, stderr=None if debug else subprocess.DEVNULL,
                                      pass_fds=(self.fd,) if self.fd >= 0 else (), start_new_session=True)
        self.requests: io.RawIOBase = self.popen.stdin
        self.replies: io.RawIOBase = self.popen.stdout
        self.ready = False
        self.clean = True  # False from a request until its whole reply is read

    def wait_readable(self, seconds: float) -> bool:
        readable, _, _ = select.select([self.replies], [], [], max(0.0, seconds))
        return bool(readable)

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.kill()
            except OSError:
                pass
        for stream in (self.requests, self.replies):
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
            self.requests.close()
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
                 full_images: bool = True, resize: tuple[int, int] | None = None, memory: int | None = None):
        if workers < 1:
            raise ValueError("a DecoderPool needs at least one worker")
        self.workers, self.max_pixels, self.deadline_s = workers, int(max_pixels), float(deadline_s)
        self.full_images, self.resize = full_images, tuple(resize) if resize else None
        resized_bytes = resize[0] * resize[1] * 3 if resize else 0
        self.capacity = (self.max_pixels * 3 if full_images else 0) + resized_bytes
        self.memory = memory if memory is not None else decode_memory_budget(self.max_pixels)
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
        if self._closed:
            raise RuntimeError("the DecoderPool is closed")
        request = {"max_pixels": self.max_pixels, "full": self.full_images,
                   "resize": list(self.resize) if self.resize else None}
        payload = None
        if isinstance(source, (str, os.PathLike)):
            request["path"] = os.fspath(source)
            name = name or request["path"]
        else:
            payload = memoryview(source).cast("B")
            name = name or "buffer"
            request["name"] = name
        process = self._idle.get()
        if process.popen.poll() is not None:  # died while idle (killed from outside): not this image's doing
            process = self._replace(process)
        process.clean = False
        try:
            return self._run(process, request, payload, name)
        finally:
            if not process.clean:  # it crashed, hung, or was interrupted mid-message: start afresh
                process = self._replace(process)
            self._idle.put(process)

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
        process = _Process(self.capacity, self.memory, self.max_pixels)
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

    def _run(self, process: _Process, request: dict, payload, name: str) -> Decoded:
        if not process.ready:
            self._await_ready(process)
        began = time.monotonic()
        try:
            write_message(process.requests, request, payload)
        except PeerGone:
            raise self._crashed(process, name) from None
        if not process.wait_readable(self.deadline_s - (time.monotonic() - began)):
            self.timeouts += 1
            raise DecodeTooCostlyError(f"{name}: too costly to decode: the decoder took longer than the deadline "
                                       f"of {self.deadline_s:g} s and was stopped")
        try:
            reply, pixels = read_message(process.replies)
        except (PeerGone, ValueError):
            raise self._crashed(process, name) from None
        process.clean = True
        if not reply.get("ok"):
            error = ERRORS.get(reply.get("kind"), ImageDecodeError)
            message = reply.get("message", "not decoded")
            if reply.get("kind") == "internal":
                message = f"{name}: the decoder failed on this file ({message})"
            raise error(message)
        return self._unpack(process, reply, pixels)

    def _unpack(self, process: _Process, reply: dict, pixels) -> Decoded:
        shapes = [tuple(shape) for shape in reply["shapes"]]
        source = process.shared if reply.get("shared") else pixels
        arrays, offset = [], 0
        for height, width in shapes:
            count = height * width * 3
            arrays.append(np.frombuffer(source, np.uint8, count, offset).reshape(height, width, 3).copy())
            offset += count
        if reply.get("shared") and offset > RELEASE_BYTES and hasattr(mmap, "MADV_REMOVE"):
            process.shared.madvise(mmap.MADV_REMOVE, 0, offset)  # a huge image's pages go back to the system
        image = arrays.pop(0) if self.full_images else None
        resized = arrays.pop(0) if self.resize else None
        size = shapes[0] if self.full_images else tuple(reply.get("size", shapes[0]))
        return Decoded(image, resized, size)

    def _await_ready(self, process: _Process) -> None:
        if not process.wait_readable(START_DEADLINE_S):
            raise RuntimeError(f"a decoder process did not start within {START_DEADLINE_S:g} s")
        try:
            read_message(process.replies)
        except PeerGone:
            raise RuntimeError(f"a decoder process failed to start: it {process.death()} (run "
                               f"`{sys.executable} -m auditor_rt.runtime.decoder_worker --memory 1000000000` "
                               "to see why)") from None
        process.ready = True

    def _crashed(self, process: _Process, name: str) -> DecoderCrashError:
        self.crashes += 1
        return DecoderCrashError(f"{name}: the image decoder crashed on this file (it {process.death()}); the "
                                 "file is damaged or hostile, and nothing else was affected")

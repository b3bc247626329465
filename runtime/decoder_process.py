"""One decoder process of a ``DecoderPool``: the subprocess, its two pipes and the memory it shares with the pool.

The shared memory is a memfd (Linux), or an unlinked temporary file elsewhere, mapped on both sides: its first
``CONTROL_BYTES`` say which item of the current request the process has started and when, the rest holds decoded
pixels. The process is started with the environment that bounds it (``decoder_worker`` limits itself further).
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import subprocess
import sys
import tempfile

from auditor_rt.runtime.decoder_protocol import CONTROL_BYTES, MessageReader

# glibc gives each buffer over its mmap threshold fresh pages from the kernel, and raises the threshold only to the
# size of the last one freed, so every decoded image of the same size faults in afresh: at 1080p about 1,500 page
# faults, 40% of a decode's CPU on the machines measured (benchmarks/decode.py). A fixed threshold of 32 MiB
# (glibc's maximum) keeps buffers up to 4K in the heap, where the next decode reuses them; past 64 MiB of free
# heap, memory goes back to the system.
MALLOC_TUNING = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864"


class DecoderProcess:
    def __init__(self, capacity: int, memory: int, max_pixels: int, tuned_malloc: bool = True):
        self.capacity = CONTROL_BYTES + capacity
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("auditor-rt-decoder")
        else:
            self.fd = os.dup(tempfile.TemporaryFile().fileno())
        os.ftruncate(self.fd, self.capacity)  # pages exist only once written
        self.shared = mmap.mmap(self.fd, self.capacity)
        command = [sys.executable, "-m", "auditor_rt.runtime.decoder_worker", "--shm-fd", str(self.fd),
                   "--capacity", str(self.capacity), "--memory", str(memory)]
        # OpenCV's own pixel limit (read once, at import) follows the pool's, so that neither refuses first.
        environment = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": str(max_pixels)}
        if tuned_malloc:
            environment["GLIBC_TUNABLES"] = ":".join(filter(None, [os.environ.get("GLIBC_TUNABLES"), MALLOC_TUNING]))
        debug = bool(os.environ.get("OPENCV_LOG_LEVEL"))  # then the codecs' messages reach the terminal
        self.popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                      env=environment, stderr=None if debug else subprocess.DEVNULL,
                                      pass_fds=(self.fd,), start_new_session=True)
        self.requests = self.popen.stdin.fileno()
        self.replies = MessageReader(self.popen.stdout.fileno())
        self.ready = False
        self.clean = True  # False from a request until its whole reply is read

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_and_state(self) -> tuple[float, str] | None:
        """(CPU seconds used, scheduler state: R running, S sleeping, D disk...) from /proc; None elsewhere."""
        try:
            fields = open(f"/proc/{self.popen.pid}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), fields[0]

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

"""Framing of the messages between a ``DecoderPool`` and its decoder processes, over a pair of pipes.

A message is a 4-byte little-endian length, a JSON header of that length, then ``header["payload"]`` bytes of
payload (encoded image bytes going in; decoded pixels coming back where no shared memory is available). JSON, not
pickle: the pool must never unpickle what a process that parses hostile files sends it.

A message costs one ``write`` and, usually, one ``read`` on each side: at 224 px a decode takes about 0.2 ms, so
the system calls and wake-ups of the round trip are most of what isolation costs. That is also why a request of
several items gets one reply, at the end: which item is being decoded, and since when, the process writes into
the first ``CONTROL_BYTES`` of the shared memory instead (``mark_started``), where the pool reads it to blame a
crash or a hang on the right item without waking up for every image.
"""

from __future__ import annotations

import json
import os
import struct
import time

MAX_HEADER = 1 << 20  # a header longer than this is a broken or hostile peer
READ_AHEAD = 1 << 16  # bytes asked for in one read: a whole small message
GATHER_LIMIT = 1 << 20  # payloads up to this are copied behind the header and written in one call


# Items started in the current request, when the last one started (monotonic), and whether it is past reading its
# file and decoding bytes in memory (then it waits on nothing: a process asleep with no CPU use is deadlocked).
CONTROL = struct.Struct("<QdB")
DECODING_AT = 16  # the offset of the last field
CONTROL_BYTES = 64  # decoded pixels start here


def mark_started(shared, count: int) -> None:
    """Note in the shared memory that ``count`` items of the current request have started, the last one now."""
    CONTROL.pack_into(shared, 0, count, time.monotonic(), 0)  # CLOCK_MONOTONIC: the same clock in every process


def mark_decoding(shared) -> None:
    """Note that the current item's bytes are in memory and the codec has them."""
    shared[DECODING_AT] = 1


def read_control(shared) -> tuple[int, float, int]:
    return CONTROL.unpack_from(shared, 0)


class PeerGone(Exception):
    """The other end closed its pipe (the process died or exited) in the middle of or before a message."""


def write_message(fd: int, header: dict, payload=None) -> None:
    if payload is not None:
        header = {**header, "payload": len(payload)}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    head = struct.pack("<I", len(encoded)) + encoded
    if payload is not None and 0 < len(payload) <= GATHER_LIMIT:
        _write_all(fd, head + bytes(payload))
        return
    _write_all(fd, head)
    if payload is not None and len(payload):
        _write_all(fd, payload)


class MessageReader:
    """Reads messages from a pipe, a large read at a time, keeping what arrived beyond the current message."""

    def __init__(self, fd: int):
        self.fd, self.pending = fd, b""

    def read(self) -> tuple[dict, memoryview | None]:
        """The next (header, payload); the payload is None when the message has none."""
        (length,) = struct.unpack("<I", self._take(4))
        if length > MAX_HEADER:
            raise PeerGone(f"a message header of {length} bytes")
        header = json.loads(self._take(length))
        size = int(header.get("payload", 0) or 0)
        if not size:
            return header, None
        buffer = bytearray(size)
        have = min(size, len(self.pending))
        buffer[:have], self.pending = self.pending[:have], self.pending[have:]
        view = memoryview(buffer)[have:]
        while view:
            count = os.readv(self.fd, [view])
            if not count:
                raise PeerGone("the pipe closed in the middle of a message")
            view = view[count:]
        return header, memoryview(buffer)

    def buffered(self) -> bool:
        """Whether a part of the next message has already been read (then no wait on the pipe is needed)."""
        return bool(self.pending)

    def _take(self, size: int) -> bytes:
        while len(self.pending) < size:
            chunk = os.read(self.fd, max(READ_AHEAD, size - len(self.pending)))
            if not chunk:
                raise PeerGone("the pipe closed in the middle of a message")
            self.pending += chunk
        data, self.pending = self.pending[:size], self.pending[size:]
        return data


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        try:
            written = os.write(fd, view)
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("the pipe is closed") from None
        view = view[written:]

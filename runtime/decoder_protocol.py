"""Framing of the messages between a ``DecoderPool`` and its decoder processes, over a pair of pipes.

A message is a 4-byte little-endian length, a JSON header of that length, then ``header["payload"]`` bytes of
payload (encoded image bytes going in; decoded pixels coming back where no shared memory is available). JSON, not
pickle: the pool must never unpickle what a process that parses hostile files sends it.
"""

from __future__ import annotations

import io
import json
import struct

MAX_HEADER = 1 << 20  # a header longer than this is a broken or hostile peer


class PeerGone(Exception):
    """The other end closed its pipe (the process died or exited) in the middle of or before a message."""


def write_message(stream: io.RawIOBase, header: dict, payload=None) -> None:
    if payload is not None:
        header = {**header, "payload": len(payload)}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    _write_all(stream, struct.pack("<I", len(encoded)) + encoded)
    if payload is not None and len(payload):
        _write_all(stream, payload)


def read_message(stream: io.RawIOBase, payload_into=None) -> tuple[dict, memoryview | None]:
    """The next (header, payload). The payload is read into ``payload_into`` (a writable buffer) when it fits,
    else into a new bytearray; None when the message has none."""
    (length,) = struct.unpack("<I", _read_exact(stream, 4))
    if length > MAX_HEADER:
        raise PeerGone(f"a message header of {length} bytes")
    header = json.loads(_read_exact(stream, length))
    size = int(header.get("payload", 0) or 0)
    if not size:
        return header, None
    if payload_into is not None and len(payload_into) >= size:
        target = memoryview(payload_into)[:size]
    else:
        target = memoryview(bytearray(size))
    _read_into(stream, target)
    return header, target


def _write_all(stream, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        try:
            written = stream.write(view)
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("the pipe is closed") from None
        view = view[written:]


def _read_exact(stream, size: int) -> bytes:
    buffer = bytearray(size)
    _read_into(stream, memoryview(buffer))
    return bytes(buffer)


def _read_into(stream, view: memoryview) -> None:
    while view:
        count = stream.readinto(view)
        if not count:
            raise PeerGone("the pipe closed in the middle of a message")
        view = view[count:]

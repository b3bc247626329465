"""Image files that attack a decoder, for the containment tests of infer, serve and the decoder pool."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"
CRASHING_APNG = HOSTILE / "apng-mutated-segfaults-opencv.png"  # SIGSEGV in OpenCV 5.1's APNG reader
OS2_BMP = HOSTILE / "bmp-os2-valid.bmp"


def _chunk(kind: bytes, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return struct.pack(">I", size) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def memory_hungry_png() -> bytes:
    """57 bytes: a tEXt chunk that declares 0xFFFFFFFF bytes. OpenCV allocates and zero-fills 4 GB for it (10 s),
    then fails; a decoder under a memory budget fails at once."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"tEXt", b"", 0xFFFFFFFF) + _chunk(b"IEND", b"")


def slow_png(side: int = 8000) -> bytes:
    """A valid, flat 8000x8000 grey PNG of 62 kB that takes about 0.6 s to decode (64 megapixels): past a
    deadline of 0.1 s on any machine, and long enough to kill its decoder in the middle."""
    ok, buffer = cv2.imencode(".png", np.zeros((side, side), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buffer.tobytes()


def png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1].tobytes()

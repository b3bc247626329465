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


def mutated_images(count: int, seed: int = 0) -> list[bytes]:
    """``count`` mutations (byte flips, cuts, huge length fields, insertions, copied runs) of small valid files in
    every format this OpenCV writes, of a two-frame APNG, and of the crashing APNG: a fixed-seed fuzz corpus."""
    import io
    import random

    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_CUBIC)
    seeds = [CRASHING_APNG.read_bytes()]
    for suffix in (".png", ".jpg", ".webp", ".tif", ".bmp", ".ppm", ".jp2", ".hdr", ".ras", ".pfm"):
        ok, encoded = cv2.imencode(suffix, pixels.astype(np.float32) / 255 if suffix in (".hdr", ".pfm") else pixels)
        if ok:
            seeds.append(encoded.tobytes())
    still = Image.fromarray(pixels)
    for kind, frames in (("PNG", [still.rotate(90)]), ("GIF", [still.convert("P").rotate(90)])):
        buffer = io.BytesIO()
        (still if kind == "PNG" else still.convert("P")).save(buffer, kind, save_all=True, append_images=frames)
        seeds.append(buffer.getvalue())
    pick = random.Random(seed)
    out = []
    for index in range(count):
        data = bytearray(seeds[index % len(seeds)])
        operation = pick.randrange(5)
        if operation == 0:
            for _ in range(pick.randint(1, 10)):
                data[pick.randrange(len(data))] = pick.randrange(256)
        elif operation == 1:
            data = data[:pick.randrange(len(data))]
        elif operation == 2:
            at = pick.randrange(8, max(9, len(data) - 4))
            data[at:at + 4] = struct.pack(">I", pick.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x10000000, 0]))
        elif operation == 3:
            at = pick.randrange(len(data))
            data[at:at] = bytes(pick.randrange(256) for _ in range(pick.randint(1, 64)))
        else:
            at, source = pick.randrange(len(data)), pick.randrange(len(data))
            data[at:at + 8] = data[source:source + 8]
        out.append(bytes(data))
    return out

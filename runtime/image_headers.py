"""The pixel size an encoded image declares in its header, read without decoding it.

``decode_image`` refuses decompression bombs with this before OpenCV allocates anything. OpenCV has a limit of
its own (``OPENCV_IO_MAX_IMAGE_PIXELS``, which ``auditor_rt.runtime`` sets), but OpenCV reads that variable only
once, so it is missed when cv2 was imported before the runtime. The header check does not depend on import order.
Formats: PNG, JPEG, BMP and WebP; for others (TIFF) OpenCV's own limit is the guard.
"""

from __future__ import annotations

import struct

JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_SCAN_LIMIT = 1 << 20  # bytes of markers to walk before giving up (EXIF blocks come first)


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, or None when the format is not one of these or the header is broken."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:2] == b"BM" and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position = 2
    limit = min(len(data), JPEG_SCAN_LIMIT)
    while position + 9 < limit:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if marker in JPEG_SOF:
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return width, height
        position += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None

"""What an encoded image is, and the pixel size its header declares, read from its first bytes without decoding.

``decode_image`` refuses decompression bombs with ``declared_size`` before OpenCV allocates anything. OpenCV has a
limit of its own (``OPENCV_IO_MAX_IMAGE_PIXELS``, which ``auditor_rt.runtime`` sets), but OpenCV reads that variable
only once, so it is missed when cv2 was imported before the runtime; the header check does not depend on import
order. ``sniff_format`` names a format from its magic bytes (the same signatures OpenCV's decoders check), so that a
body without a usable Content-Type can still be recognised, and so that an error can say "a truncated PNG" rather
than "unreadable".
"""

from __future__ import annotations

import re
import struct

JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_SCAN_LIMIT = 1 << 20  # bytes of markers to walk before giving up (EXIF blocks come first)
TEXT_HEADER_LIMIT = 4096   # PNM, PFM and Radiance headers are text lines at the start of the file
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"

# (format name, test on the first bytes), in the order OpenCV tries its decoders; the names appear in messages.
_SIGNATURES = (
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff"),
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n"),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a")),
    ("BMP", lambda d: d[:2] == b"BM"),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP"),
    ("JPEG 2000", lambda d: d[:12] == JP2_SIGNATURE or d[:4] == b"\xff\x4f\xff\x51"),
    ("PNM", lambda d: len(d) >= 3 and d[:1] == b"P" and d[1:2] in b"1234567" and d[2:3] in b" \t\r\n#"),
    ("PFM", lambda d: len(d) >= 3 and d[:2] in (b"PF", b"Pf") and d[2:3] in b" \t\r\n"),
    ("Radiance HDR", lambda d: d[:10] == b"#?RADIANCE" or d[:6] == b"#?RGBE"),
    ("Sun raster", lambda d: d[:4] == b"\x59\xa6\x6a\x95"),
    ("AVIF", lambda d: d[4:8] == b"ftyp" and d[8:12] in (b"avif", b"avis")),
    ("OpenEXR", lambda d: d[:4] == b"\x76\x2f\x31\x01"),
)


def sniff_format(data) -> str | None:
    """The image format the first bytes announce ('PNG', 'TIFF', ...), or None when they match none."""
    head = bytes(data[:16])
    for name, matches in _SIGNATURES:
        if matches(head):
            return name
    return None


def declared_size(data) -> tuple[int, int] | None:
    """(width, height) from the header of a bytes-like ``data``, or None when the format keeps its size elsewhere
    (then OpenCV's own pixel limit is the guard) or the header is broken."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    reader = _READERS.get(sniff_format(view))
    if reader is None:
        return None
    try:
        return reader(view)
    except (struct.error, ValueError, IndexError):
        return None


def _png(data) -> tuple[int, int] | None:
    if bytes(data[12:16]) != b"IHDR":
        return None
    return struct.unpack_from(">II", data, 16)


def _jpeg(data) -> tuple[int, int] | None:
    position = 2
    limit = min(len(data), JPEG_SCAN_LIMIT)
    while position + 9 < limit:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = struct.unpack_from(">H", data, position + 2)[0]
        if marker in JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, position + 5)
            return width, height
        position += 2 + length
    return None


def _bmp(data) -> tuple[int, int] | None:
    if struct.unpack_from("<I", data, 14)[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _gif(data) -> tuple[int, int]:
    return struct.unpack_from("<HH", data, 6)  # the logical screen, which the decoder allocates


def _webp(data) -> tuple[int, int] | None:
    chunk = bytes(data[12:16])
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff(data) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first directory, the page OpenCV decodes. The directory may
    sit anywhere in the file (libtiff writes it last), which is why the whole buffer is passed in."""
    order = "<" if bytes(data[:2]) == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    if big:
        offset = struct.unpack_from(order + "Q", data, 8)[0]
        count = struct.unpack_from(order + "Q", data, offset)[0]
        start, step, entry = offset + 8, 20, order + "HHQ"
    else:
        offset = struct.unpack_from(order + "I", data, 4)[0]
        count = struct.unpack_from(order + "H", data, offset)[0]
        start, step, entry = offset + 2, 12, order + "HHI"
    found = {}
    for index in range(min(count, 4096)):
        position = start + index * step
        tag, kind, _ = struct.unpack_from(entry, data, position)
        if tag in (256, 257):
            value_at = position + (12 if big else 8)
            code = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if code is None:
                return None
            found[tag] = struct.unpack_from(order + code, data, value_at)[0]
    if len(found) < 2:
        return None
    return found[256], found[257]


def _jpeg2000(data) -> tuple[int, int] | None:
    head = bytes(data[:TEXT_HEADER_LIMIT])
    if head[:4] == b"\xff\x4f\xff\x51":  # a raw codestream: the SIZ marker follows SOC
        xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", head, 8)
        return xsiz - xosiz, ysiz - yosiz
    at = head.find(b"ihdr")  # JP2: the image header box inside 'jp2h'
    if at < 0:
        return None
    height, width = struct.unpack_from(">II", head, at + 4)
    return width, height


def _pnm(data) -> tuple[int, int] | None:
    text = bytes(data[:TEXT_HEADER_LIMIT]).decode("latin-1")
    if text.startswith("P7"):  # PAM: WIDTH and HEIGHT lines
        width, height = re.search(r"\bWIDTH\s+(\d+)", text), re.search(r"\bHEIGHT\s+(\d+)", text)
        return (int(width.group(1)), int(height.group(1))) if width and height else None
    text = re.sub(r"#[^\n]*", " ", text[2:])  # comments may sit between the numbers
    numbers = text.split()
    return int(numbers[0]), int(numbers[1])


def _radiance(data) -> tuple[int, int] | None:
    text = bytes(data[:TEXT_HEADER_LIMIT]).decode("latin-1")
    match = re.search(r"\n([-+][YX]) (\d+) ([-+][YX]) (\d+)", text)
    if match is None:
        return None
    first, second = int(match.group(2)), int(match.group(4))
    return (second, first) if match.group(1).endswith("Y") else (first, second)


def _sun_raster(data) -> tuple[int, int]:
    return struct.unpack_from(">II", data, 4)


def _avif(data) -> tuple[int, int] | None:
    """The largest 'ispe' (image spatial extents) property in the first megabyte: the full image of a grid."""
    head = bytes(data[:JPEG_SCAN_LIMIT])
    sizes, at = [], head.find(b"ispe")
    while at >= 0:
        sizes.append(struct.unpack_from(">II", head, at + 8))
        at = head.find(b"ispe", at + 4)
    return max(sizes, key=lambda size: size[0] * size[1]) if sizes else None


_READERS = {"PNG": _png, "JPEG": _jpeg, "BMP": _bmp, "GIF": _gif, "WebP": _webp, "TIFF": _tiff,
            "JPEG 2000": _jpeg2000, "PNM": _pnm, "PFM": _pnm, "Radiance HDR": _radiance,
            "Sun raster": _sun_raster, "AVIF": _avif}

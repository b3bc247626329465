"""What an encoded image is, and the pixel size its header declares, read from its first bytes without decoding.

``decode_image`` refuses decompression bombs with ``declared_size`` before OpenCV allocates anything. OpenCV has a
limit of its own (``OPENCV_IO_MAX_IMAGE_PIXELS``, which ``auditor_rt.runtime`` sets), but OpenCV reads that variable
only once, so it is missed when cv2 was imported before the runtime; the header check does not depend on import
order. ``sniff_format`` names a format from its magic bytes (the same signatures OpenCV's decoders check), so that a
body without a usable Content-Type can still be recognised, and so that an error can say "a truncated PNG" rather
than "unreadable". ``png_is_animated`` tells an APNG from a still PNG.

Each reader follows its format's specification (cited field by field below) and, where the specification leaves a
choice, what OpenCV's decoder does; tests/runtime/test_image_headers.py checks every variant against OpenCV. A
reader returns None when the header is broken, truncated or not where it can be found cheaply: then OpenCV's own
pixel limit is the guard. The size is the one stored in the file: an EXIF orientation, which OpenCV applies, swaps
width and height but not the pixel count that the bomb check compares.
"""

from __future__ import annotations

import re
import struct

JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_STANDALONE = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7}  # TEM and RSTn: markers without a length
JPEG_SCAN_LIMIT = 1 << 20  # bytes of markers to walk before giving up (EXIF blocks come first)
SEGMENT_LIMIT = 4096       # JPEG segments or ISO boxes to walk before giving up
TEXT_HEADER_LIMIT = 4096   # PNM, PFM and Radiance headers are text lines at the start of the file
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK_LIMIT = 64       # chunks that png_is_animated walks before giving up
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_SOC_SIZ = b"\xff\x4f\xff\x51"  # a raw JPEG 2000 codestream: SOC, then the SIZ marker

# (format name, test on the first bytes), in the order OpenCV tries its decoders; the names appear in messages.
_SIGNATURES = (
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff"),
    ("PNG", lambda d: d[:8] == PNG_SIGNATURE),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a")),
    ("BMP", lambda d: d[:2] == b"BM"),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP"),
    ("JPEG 2000", lambda d: d[:12] == JP2_SIGNATURE or d[:4] == J2K_SOC_SIZ),
    ("PNM", lambda d: len(d) >= 3 and d[:1] == b"P" and d[1:2] in b"1234567" and d[2:3] in b" \t\r\n\v\f#"),
    ("PFM", lambda d: len(d) >= 3 and d[:2] in (b"PF", b"Pf") and d[2:3] in b" \t\r\n\v\f"),
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
    (then OpenCV's own pixel limit is the guard) or the header is broken. Never raises on broken data."""
    view = _byte_view(data)
    reader = _READERS.get(sniff_format(view))
    if reader is None:
        return None
    try:
        size = reader(view)
    except (struct.error, ValueError, IndexError, OverflowError):
        return None
    if size is None or not all(isinstance(side, int) and side >= 0 for side in size):
        return None
    return int(size[0]), int(size[1])


def png_is_animated(data) -> bool:
    """True when a PNG has an ``acTL`` chunk before its first ``IDAT`` (APNG: "acTL must appear before the first
    IDAT"). Chunks are walked by their length fields from offset 8. The answer errs towards True, since a service
    uses it to keep files away from OpenCV's APNG reader: an ``acTL`` counts even when its own length is broken,
    and past ``PNG_CHUNK_LIMIT`` chunks, or at a length that runs past the data, any ``acTL`` bytes before the
    first ``IDAT`` bytes count."""
    view = _byte_view(data)
    if bytes(view[:8]) != PNG_SIGNATURE:
        return False
    position = 8
    for _ in range(PNG_CHUNK_LIMIT):
        if position + 8 > len(view):  # length (4) and type (4)
            return False
        kind = bytes(view[position + 4:position + 8])
        if kind == b"acTL":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        position += 12 + struct.unpack_from(">I", view, position)[0]  # length, type, data, CRC
        if position > len(view):
            break
    rest = bytes(view[8:])
    image_data = rest.find(b"IDAT")
    return b"acTL" in (rest if image_data < 0 else rest[:image_data])


def _byte_view(data):
    """``data`` as bytes or a flat memoryview of bytes (a NumPy array, bytearray or memoryview is not copied)."""
    if isinstance(data, bytes):
        return data
    try:
        return memoryview(data).cast("B")
    except TypeError:  # not C-contiguous, or a multi-byte item format
        return memoryview(data).tobytes()


def _png(data) -> tuple[int, int] | None:
    # PNG 5.6 and 11.2.2: IHDR is the first chunk; its data starts with Width and Height, 4-byte big-endian.
    if bytes(data[12:16]) != b"IHDR":
        return None
    return struct.unpack_from(">II", data, 16)


_NOT_FILL = re.compile(rb"[^\xff]")


def _jpeg(data) -> tuple[int, int] | None:
    """Y (number of lines) and X (samples per line) of the frame header SOFn (ITU-T T.81 B.2.2), walking the marker
    segments before it by their lengths. Any marker may be preceded by fill bytes 0xFF (B.1.1.2); libjpeg also skips
    other stray bytes before a marker (with a warning), so the search for the next marker does too."""
    head = bytes(data[:JPEG_SCAN_LIMIT])
    position = 2  # after SOI
    for _ in range(SEGMENT_LIMIT):
        start = head.find(b"\xff", position)
        code = _NOT_FILL.search(head, start) if start >= 0 else None  # the byte after the run of 0xFF
        if code is None:
            return None
        marker, position = head[code.start()], code.end()
        if marker == 0x00 or marker in JPEG_STANDALONE:  # 0xFF00 is a stuffed byte; TEM and RSTn have no length
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or a scan before any frame header: not decodable
            return None
        length = struct.unpack_from(">H", head, position)[0]  # Lf / Lp: counts itself, not the marker
        if length < 2:
            return None
        if marker in JPEG_SOF:
            height, width = struct.unpack_from(">HH", head, position + 3)  # after Lf (2) and P (1)
            return width, height
        position += length
    return None


def _bmp(data) -> tuple[int, int] | None:
    """BITMAPFILEHEADER (14 bytes), then an info header whose first field is its own size:
    12, OS/2 1.x BITMAPCOREHEADER: bcWidth, bcHeight are 16-bit unsigned;
    16 to 64, OS/2 2.x BITMAPINFOHEADER2 (cbFix 16 or 64; OpenCV decodes 64 only), and 40, 52, 56, 108, 124, Windows
    BITMAPINFOHEADER and its V2 to V5 extensions: biWidth, biHeight are 32-bit signed, a negative height is a
    top-down bitmap (OpenCV takes its absolute value)."""
    header_size = struct.unpack_from("<I", data, 14)[0]
    if header_size == 12:
        return struct.unpack_from("<HH", data, 18)
    if header_size < 16:
        return None
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)


def _gif(data) -> tuple[int, int]:
    # GIF89a section 18, Logical Screen Descriptor: the canvas OpenCV allocates (each frame must lie inside it).
    return struct.unpack_from("<HH", data, 6)


def _webp(data) -> tuple[int, int] | None:
    """The WebP container's first chunk (at 12; its payload at 20) holds the size."""
    chunk = bytes(data[12:16])
    if chunk == b"VP8X" and len(data) >= 30:  # extended: 24-bit Canvas Width Minus One, Canvas Height Minus One
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: signature, 14-bit width-1, height-1
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy, RFC 6386 9.1: 3-byte frame tag, start code 9d 01 2a, then 14-bit width, height
        if data[20] & 1 or bytes(data[23:26]) != b"\x9d\x01\x2a":  # must be a key frame
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF  # the top 2 bits are an upscaling hint that decoders ignore
    return None


# TIFF 6.0 section 2 (and BigTIFF) field types that hold an integer: BYTE, SHORT, LONG, SBYTE, SSHORT, SLONG, LONG8,
# SLONG8. ImageWidth and ImageLength should be SHORT or LONG; libtiff accepts the others too.
_TIFF_INTEGERS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q"}


def _tiff(data) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first image file directory, the page OpenCV decodes. The
    directory may sit anywhere in the file (libtiff writes it last), which is why the whole buffer is passed in.
    A value that fits the entry's value field (4 bytes, 8 in BigTIFF) is stored there, left-justified."""
    order = "<" if bytes(data[:2]) == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    if big:
        offset = struct.unpack_from(order + "Q", data, 8)[0]
        count = struct.unpack_from(order + "Q", data, offset)[0]
        start, step, entry, field = offset + 8, 20, order + "HHQ", 8
    else:
        offset = struct.unpack_from(order + "I", data, 4)[0]
        count = struct.unpack_from(order + "H", data, offset)[0]
        start, step, entry, field = offset + 2, 12, order + "HHI", 4
    found = {}
    for index in range(min(count, SEGMENT_LIMIT)):
        position = start + index * step
        tag, kind, values = struct.unpack_from(entry, data, position)
        if tag in (256, 257) and tag not in found:  # libtiff ignores a repeated tag
            code = _TIFF_INTEGERS.get(kind)
            if code is None or values != 1 or struct.calcsize(code) > field:
                return None
            found[tag] = struct.unpack_from(order + code, data, position + step - field)[0]
            if len(found) == 2:
                return found[256], found[257]
    return None


def _iso_boxes(data, start: int, end: int):
    """(type, payload start, payload end) of the boxes in data[start:end]: ISO/IEC 15444-1 Annex I.4 (JP2) and
    ISO/IEC 14496-12 4.2 (AVIF). A box is a 4-byte big-endian length, counting the header, and a 4-byte type; length
    1 means that an 8-byte length follows, 0 that the box runs to the end. Stops at a malformed box."""
    end = min(end, len(data))
    for _ in range(SEGMENT_LIMIT):
        if start + 8 > end:
            return
        length, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if length == 1:
            if start + 16 > end:
                return
            length, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif length == 0:
            length = end - start
        if length < header:
            return
        if start + length > end:
            yield kind, start + header, end  # a box cut short by a truncated file: the caller reads what is there
            return
        yield kind, start + header, start + length
        start += length


def _jpeg2000(data) -> tuple[int, int] | None:
    """The image area of the codestream's SIZ marker (ISO/IEC 15444-1 A.5.1): Xsiz - XOsiz by Ysiz - YOsiz, what
    OpenJPEG decodes. In a JP2 file the codestream is the 'jp2c' box; when it is past the data read, the 'ihdr' box
    in 'jp2h' (I.5.3.1: HEIGHT, then WIDTH, equal to the SIZ values) answers."""
    if bytes(data[:4]) == J2K_SOC_SIZ:
        return _j2k_siz(data, 0)
    declared = None
    for kind, start, end in _iso_boxes(data, 0, len(data)):
        if kind == b"jp2h":
            for sub, sub_start, _ in _iso_boxes(data, start, end):
                if sub == b"ihdr":
                    height, width = struct.unpack_from(">II", data, sub_start)
                    declared = width, height
        elif kind == b"jp2c":
            return _j2k_siz(data, start) or declared
    return declared


def _j2k_siz(data, start: int) -> tuple[int, int] | None:
    if len(data) < start + 24 or bytes(data[start:start + 4]) != J2K_SOC_SIZ:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, start + 8)  # after SOC, SIZ, Lsiz and Rsiz
    return xsiz - xosiz, ysiz - yosiz  # a negative difference (broken header) makes declared_size answer None


# Netpbm: the header's numbers are ASCII decimal separated by whitespace; a '#' starts a comment that runs to the
# next carriage return or line feed, and may follow a number directly. The lookahead refuses a number that the
# TEXT_HEADER_LIMIT window cuts short.
_PNM_NUMBER = re.compile(rb"(?:[ \t\n\v\f\r]|#[^\r\n]*[\r\n])*(\d+)(?=\D)")  # one character per repeat: linear


def _pnm(data) -> tuple[int, int] | None:
    """PBM, PGM, PPM (P1 to P6): width, then height, after the magic number. PAM (P7): WIDTH and HEIGHT lines."""
    head = bytes(data[:TEXT_HEADER_LIMIT])
    if head[:2] == b"P7":
        return _pam(head)
    sides, position = [], 2
    for _ in range(2):
        match = _PNM_NUMBER.match(head, position)
        if match is None:
            return None
        sides.append(int(match.group(1)))
        position = match.end()
    return sides[0], sides[1]


def _pam(head: bytes) -> tuple[int, int] | None:
    # Netpbm PAM: 'P7', then lines 'TOKEN value' up to ENDHDR; a line starting with '#' is a comment.
    sides = {}
    for line in re.split(rb"[\r\n]", head[3:]):
        fields = line.split()
        if not fields or fields[0].startswith(b"#"):
            continue
        if fields[0] == b"ENDHDR":
            return (sides[b"WIDTH"], sides[b"HEIGHT"]) if len(sides) == 2 else None
        if fields[0] in (b"WIDTH", b"HEIGHT"):
            if fields[0] in sides or len(fields) != 2 or not fields[1].isdigit():
                return None  # OpenCV refuses a repeated field
            sides[fields[0]] = int(fields[1])
    return None  # no ENDHDR within the window


def _pfm(data) -> tuple[int, int] | None:
    # PFM: 'PF' (color) or 'Pf' (gray) and a line feed, then width and height, then the scale; no comments.
    match = re.match(rb"P[Ff]\n(\d+)[ \t\r\n]+(\d+)\s", bytes(data[:TEXT_HEADER_LIMIT]))
    return (int(match.group(1)), int(match.group(2))) if match else None


_RADIANCE_RESOLUTION = re.compile(rb"([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\s")


def _radiance(data) -> tuple[int, int] | None:
    """Radiance RGBE: a '#?' line, variable lines and an empty line, then the resolution string, such as
    '-Y 21 +X 37' (21 scanlines of 37 pixels, the orientation OpenCV reads) or '+X 37 -Y 21'. Whatever the order,
    the number after X is the width and the number after Y the height."""
    head = bytes(data[:TEXT_HEADER_LIMIT])
    end = head.find(b"\n\n")
    match = _RADIANCE_RESOLUTION.match(head, end + 2) if end >= 0 else None
    if match is None or match.group(2) == match.group(5):
        return None
    first, second = int(match.group(3)), int(match.group(6))
    return (second, first) if match.group(2) == b"Y" else (first, second)


def _sun_raster(data) -> tuple[int, int]:
    # Sun raster header: ras_magic, then ras_width and ras_height, 4-byte big-endian.
    return struct.unpack_from(">II", data, 4)


def _avif(data) -> tuple[int, int] | None:
    """The larger of the primary item's size and any track's: libavif decodes the track of an image sequence."""
    sizes = []
    for kind, start, end in _iso_boxes(data, 0, len(data)):
        if kind == b"meta":
            sizes.append(_heif_primary_size(data, start + 4, end))  # FullBox: version and flags come first
        elif kind == b"moov":
            sizes.extend(_track_size(data, start, end))
    sizes = [size for size in sizes if size is not None]
    return max(sizes, key=lambda size: size[0] * size[1]) if sizes else None


def _heif_primary_size(data, start: int, end: int) -> tuple[int, int] | None:
    """ISO/IEC 23008-12 (HEIF): the 'ispe' (image spatial extents: width, height) property that 'ipma' associates
    with the item 'pitm' names; the largest 'ispe' when the associations cannot be read."""
    primary, extents, associations = None, [], {}
    for kind, box_start, box_end in _iso_boxes(data, start, end):
        if kind == b"pitm":  # FullBox; item_ID is 16-bit in version 0, 32-bit after
            primary = struct.unpack_from(">H" if data[box_start] == 0 else ">I", data, box_start + 4)[0]
        elif kind == b"iprp":
            for sub, sub_start, sub_end in _iso_boxes(data, box_start, box_end):
                if sub == b"ipco":  # properties, numbered from 1 in ipma
                    extents = [struct.unpack_from(">II", data, at + 4) if prop == b"ispe" else None
                               for prop, at, _ in _iso_boxes(data, sub_start, sub_end)]
                elif sub == b"ipma":
                    associations = _ipma(data, sub_start)
    chosen = [extents[index - 1] for index in associations.get(primary, ()) if 0 < index <= len(extents)]
    chosen = [size for size in chosen if size is not None] or [size for size in extents if size is not None]
    return max(chosen, key=lambda size: size[0] * size[1]) if chosen else None


def _ipma(data, start: int) -> dict[int, list[int]]:
    # ItemPropertyAssociationBox: entry_count, then per item its ID and its property indices (the top bit of each
    # index is 'essential'; indices are 15-bit when flags & 1, else 7-bit).
    version, flags = data[start], int.from_bytes(data[start + 1:start + 4], "big")
    count, position = struct.unpack_from(">I", data, start + 4)[0], start + 8
    associations = {}
    for _ in range(min(count, SEGMENT_LIMIT)):
        item = struct.unpack_from(">H" if version < 1 else ">I", data, position)[0]
        position += 2 if version < 1 else 4
        indices, position = data[position], position + 1
        wide = flags & 1
        associations[item] = [(struct.unpack_from(">H", data, position + 2 * n)[0] & 0x7FFF) if wide
                              else data[position + n] & 0x7F for n in range(indices)]
        position += indices * (2 if wide else 1)
    return associations


def _track_size(data, start: int, end: int):
    # ISO/IEC 14496-12 8.3.2 TrackHeaderBox: width and height are 16.16 fixed-point, after 76 bytes (version 0) or
    # 88 bytes (version 1) of the box payload.
    for kind, trak_start, trak_end in _iso_boxes(data, start, end):
        if kind == b"trak":
            for sub, sub_start, _ in _iso_boxes(data, trak_start, trak_end):
                if sub == b"tkhd":
                    width, height = struct.unpack_from(">II", data, sub_start + (88 if data[sub_start] == 1 else 76))
                    yield width >> 16, height >> 16


_READERS = {"PNG": _png, "JPEG": _jpeg, "BMP": _bmp, "GIF": _gif, "WebP": _webp, "TIFF": _tiff,
            "JPEG 2000": _jpeg2000, "PNM": _pnm, "PFM": _pfm, "Radiance HDR": _radiance,
            "Sun raster": _sun_raster, "AVIF": _avif}

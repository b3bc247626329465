"""The header reader behind the decompression-bomb check, against OpenCV on valid files of every header variant.

Each case is a small valid file (37x21 where the format allows any size, so that a width/height swap shows), built
with Pillow, tifffile or cv2, or by hand with struct where no encoder writes the variant. For each one
``sniff_format`` must name the format, ``declared_size`` must give the size its specification says, and, where
OpenCV decodes the variant, the size of what ``cv2.imdecode(..., IMREAD_COLOR)`` returns (shape is HxW). Variants
OpenCV does not decode (an OS/2 BMP with a 16-byte header, Radiance orientations other than -Y +X, a JPEG 2000
image offset) are checked against the specification only, and OpenCV's refusal is asserted so that a build that
gains them is noticed.

EXIF orientation: IMREAD_COLOR applies it, so a JPEG whose orientation is a quarter turn decodes with width and
height swapped. ``declared_size`` reports the frame as stored (the SOF header), which is what the decoder allocates;
the bomb check multiplies the two, so for those cases the sorted sizes (and so the pixel count) are compared.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from PIL import Image, features

from auditor_rt.runtime.image_headers import declared_size, png_is_animated, sniff_format
from auditor_rt.runtime.quiet_decoders import quiet_decoders

W, H = 37, 21
CORPUS = Path("/work/shared/corpus")


def pixels(height: int = H, width: int = W, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """A gradient that differs along both axes, so that a transposed decode would not look the same."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [(x * 7 + y * 13 + 40 * c) % 256 for c in range(channels)]
    image = np.stack(planes, axis=-1).astype(np.uint8)
    if dtype == np.uint16:
        image = image.astype(np.uint16) * 257
    return image[..., 0] if channels == 1 else image


def pillow(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def rgb(width: int = W, height: int = H) -> Image.Image:
    return Image.fromarray(pixels(height, width))


def opencv(ext: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok, ext
    return buffer.tobytes()


def opencv_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of what OpenCV decodes, or None when it refuses the data."""
    try:
        with quiet_decoders():
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return None if image is None else (image.shape[1], image.shape[0])


# --- hand-built files ------------------------------------------------------------------------------------------

def bmp(header_size: int, bpp: int, top_down: bool = False) -> bytes:
    """BITMAPFILEHEADER, an info header of the given size (12: OS/2 1.x core header with 16-bit sizes and 3-byte
    palette entries; 16 and 64: OS/2 2.x; 40, 52, 56, 108, 124: Windows and its V2 to V5 extensions), a palette
    for 8 bits or fewer, and rows padded to 4 bytes."""
    colors = 1 << bpp if bpp <= 8 else 0
    entry = 3 if header_size == 12 else 4
    palette = b"".join(bytes(((i * 37) % 256, (i * 91) % 256, (i * 13) % 256, 0)[:entry]) for i in range(colors))
    stride = (W * bpp + 31) // 32 * 4
    rows = bytes((x * 5 + y * 11) % 256 for y in range(H) for x in range(stride))
    height = -H if top_down else H
    if header_size == 12:
        info = struct.pack("<IHHHH", 12, W, H, 1, bpp)
    elif header_size == 16:
        info = struct.pack("<IiiHH", 16, W, height, 1, bpp)
    else:
        info = bytearray(struct.pack("<IiiHHIIiiII", header_size, W, height, 1, bpp, 0, len(rows), 2835, 2835,
                                     colors, 0) + bytes(header_size - 40))
        if header_size >= 108:
            info[56:60] = b"BGRs"  # bV4CSType LCS_sRGB
        info = bytes(info)
    offset = 14 + len(info) + len(palette)
    return struct.pack("<2sIHHI", b"BM", offset + len(rows), 0, 0, offset) + info + palette + rows


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png(image: np.ndarray, interlaced: bool) -> bytes:
    """An 8- or 16-bit gray or RGB PNG with filter type 0, interlaced with Adam7 (PNG 8.2) when asked."""
    height, width = image.shape[:2]
    color_type = 2 if image.ndim == 3 else 0
    depth = 16 if image.dtype == np.uint16 else 8
    stored = image.astype(">u2") if depth == 16 else image
    raw = b""
    for x0, y0, dx, dy in ADAM7 if interlaced else ((0, 0, 1, 1),):
        sub = stored[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 1 if interlaced else 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def jpeg_markers(data: bytes) -> list[int]:
    """Offsets of the markers from the one after SOI up to SOS (a plain walk of a well-formed file)."""
    offsets, position = [], 2
    while True:
        offsets.append(position)
        if data[position + 1] == 0xDA:
            return offsets
        position += 2 + struct.unpack_from(">H", data, position + 2)[0]


def jpeg_with_fill_bytes(count: int = 5) -> bytes:
    """Every marker segment after SOI preceded by fill bytes 0xFF (T.81 B.1.1.2)."""
    data = pillow(rgb(), "JPEG", quality=90)
    for offset in reversed(jpeg_markers(data)):
        data = data[:offset] + b"\xff" * count + data[offset:]
    return data


def jpeg_with_stray_bytes() -> bytes:
    """Bytes other than 0xFF between two segments: not allowed by T.81, but libjpeg skips them with a warning."""
    data = pillow(rgb(), "JPEG", quality=90)
    offset = jpeg_markers(data)[1]
    return data[:offset] + b"\x00\x12\x34" + data[offset:]


def jpeg_with_exif(orientation: int | None = None, padding: int = 0) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if padding:
        exif[0x010E] = "x" * padding  # ImageDescription: a large APP1 segment before the frame header
    return pillow(rgb(), "JPEG", quality=90, exif=exif.tobytes())


def jpeg_exif_bytes() -> bytes:
    exif = Image.Exif()
    exif[0x0131] = "auditor-rt tests"  # Software
    return exif.tobytes()


def jpeg_with_icc(size: int) -> bytes:
    """An ICC profile of ``size`` bytes, which Pillow splits over several APP2 segments (64 kB at most each)."""
    return pillow(rgb(), "JPEG", quality=90, icc_profile=bytes(range(256)) * (size // 256))


def gif_screen_larger_than_frame() -> bytes:
    """A 37x21 logical screen holding a 10x5 frame at (3, 4): OpenCV allocates the screen."""
    data = bytearray(pillow(Image.fromarray(pixels(5, 10)).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", W, H)
    position = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[position] == 0x21:  # extensions: introducer, label, then sub-blocks up to a zero length
        position += 2
        while data[position]:
            position += data[position] + 1
        position += 1
    assert data[position] == 0x2C  # the image descriptor: left, top, width, height
    data[position + 1:position + 5] = struct.pack("<HH", 3, 4)
    return bytes(data)


def webp_vp8_with_scaling_bits() -> bytes:
    """The 2-bit horizontal and vertical scale fields above the 14-bit sizes set (RFC 6386 9.1): a hint to the
    display, which decoders ignore."""
    data = bytearray(pillow(rgb(), "WEBP", quality=80))
    assert data[12:16] == b"VP8 "
    data[27] |= 0x40
    data[29] |= 0x80
    return bytes(data)


TIFF_CODES = {3: "H", 4: "I", 16: "Q"}


def tiff(order: str, big: bool = False, width_type: int = 3, height_type: int = 4, directory_last: bool = False,
         repeated_width: bool = False):
    """An 8-bit gray, uncompressed, one-strip TIFF or BigTIFF written field by field. A value shorter than the
    entry's value field is stored left-justified, which tells a SHORT read as a LONG apart in big-endian files.
    A repeated ImageWidth entry is ignored by libtiff, which keeps the first."""
    raster = pixels(channels=1).tobytes()
    field = 8 if big else 4
    fields = [(256, width_type, W), (257, height_type, H), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, None),
              (277, 3, 1), (278, 4, H), (279, 4, len(raster))]
    if repeated_width:
        fields.insert(1, (256, 3, 99))
    header = 16 if big else 8
    directory_size = (8 if big else 2) + len(fields) * (20 if big else 12) + field
    raster_at = header if directory_last else header + directory_size
    directory_at = header + len(raster) if directory_last else header
    directory = struct.pack(order + ("Q" if big else "H"), len(fields))
    for tag, kind, value in fields:
        value = raster_at if value is None else value
        stored = struct.pack(order + TIFF_CODES[kind], value).ljust(field, b"\x00")
        directory += struct.pack(order + ("HHQ" if big else "HHI"), tag, kind, 1) + stored
    directory += bytes(field)  # no next directory
    magic = b"II" if order == "<" else b"MM"
    if big:
        start = magic + struct.pack(order + "HHHQ", 43, 8, 0, directory_at)
    else:
        start = magic + struct.pack(order + "HI", 42, directory_at)
    return start + (raster + directory if directory_last else directory + raster)


def tifffile_bytes(pages, **params) -> bytes:
    tifffile = pytest.importorskip("tifffile")
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, bigtiff=params.pop("bigtiff", False), byteorder=params.pop("byteorder", "<")) \
            as writer:
        for page in pages:
            writer.write(page, photometric="rgb" if page.ndim == 3 else "minisblack", **params)
    return buffer.getvalue()


def pnm_raster(magic: str, maxval: int = 255) -> bytes:
    gray, color = pixels(channels=1), pixels()
    if magic == "P1":
        return "\n".join(" ".join(str((x + y) % 2) for x in range(W)) for y in range(H)).encode() + b"\n"
    if magic == "P4":
        return np.packbits(((np.indices((H, W)).sum(0)) % 2).astype(np.uint8), axis=1).tobytes()
    image = gray if magic in ("P2", "P5") else color
    scaled = (image.astype(np.uint32) * maxval // 255).astype(">u2" if maxval > 255 else np.uint8)
    if magic in ("P2", "P3"):
        return " ".join(str(v) for v in scaled.ravel()).encode() + b"\n"
    return scaled.tobytes()


def pam(header: bytes, depth: int = 1) -> bytes:
    image = pixels(channels=depth)
    return header + image.tobytes()


def radiance(resolution: bytes, magic: bytes = b"#?RADIANCE") -> bytes:
    """A flat (not run-length encoded) RGBE file: header lines, an empty line, the resolution string, pixels."""
    header = magic + b"\n# made by hand\nEXPOSURE=1.0\nFORMAT=32-bit_rle_rgbe\n\n" + resolution + b"\n"
    return header + bytes((100, 60, 30, 128)) * (W * H)


def sun_raster(depth: int, encoded: bool = False, colormap: bool = False) -> bytes:
    """Sun raster: eight 4-byte big-endian fields (magic, width, height, depth, length, type, maptype, maplength),
    a colormap, rows padded to 16 bits. Type 2 (byte-encoded) data without the escape byte 0x80 is literal."""
    stride = ((W * depth + 15) // 16) * 2
    raster = bytes(((x * 5 + y * 11) % 256) or 1 for y in range(H) for x in range(stride))
    raster = raster.replace(b"\x80", b"\x81")
    palette = bytes(range(256)) * 3 if colormap else b""
    header = struct.pack(">8I", 0x59A66A95, W, H, depth, len(raster), 2 if encoded else 1, 1 if colormap else 0,
                         len(palette))
    return header + palette + raster


def jp2_with_box_before_header(kind: bytes) -> bytes:
    """A JP2 with an XML or UUID box between 'ftyp' and 'jp2h' (allowed: I.2), whose text contains 'ihdr'."""
    data = pillow(rgb(), "JPEG2000")
    ftyp_end = 12 + struct.unpack_from(">I", data, 12)[0]
    body = (b"\x00" * 16 if kind == b"uuid" else b"") + b"<x>ihdr" + struct.pack(">II", 9999, 9999) + b"</x>"
    return data[:ftyp_end] + struct.pack(">I", 8 + len(body)) + kind + body + data[ftyp_end:]


def j2k_with_image_offset() -> bytes:
    """A codestream whose image area starts at (4, 3) of the reference grid (SIZ XOsiz, YOsiz), the image still
    37x21. OpenCV refuses it ('tiles are not supported')."""
    data = bytearray(pillow(rgb(), "JPEG2000", no_jp2=True))
    xsiz, ysiz = struct.unpack_from(">II", data, 8)
    data[8:24] = struct.pack(">IIII", xsiz + 4, ysiz + 3, 4, 3)
    data[32:40] = struct.pack(">II", 0, 0)  # XTOsiz, YTOsiz stay at the origin; the one tile still covers the image
    data[24:32] = struct.pack(">II", xsiz + 4, ysiz + 3)
    return bytes(data)


def corpus(name: str) -> bytes:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    return path.read_bytes()


# --- the cases -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    fmt: str                           # what sniff_format must say
    build: Callable[[], bytes]
    size: tuple[int, int] = (W, H)     # (width, height) per the format's specification
    opencv: bool = True                # False: a valid variant that OpenCV does not decode
    rotated: bool = False              # EXIF orientation turns the decoded image a quarter
    needs: str | None = None           # a Pillow feature the builder needs


CASES: dict[str, Case] = {}

for _header in (12, 16, 40, 52, 56, 64, 108, 124):
    for _bpp in (1, 4, 8, 24, 32):
        for _top_down in (False, True) if _header != 12 else (False,):  # 12: unsigned sizes, bottom-up only
            CASES[f"bmp-{_header}-{_bpp}bpp{'-topdown' if _top_down else ''}"] = Case(
                "BMP", functools.partial(bmp, _header, _bpp, _top_down), opencv=_header != 16)
CASES["bmp-40-16bpp"] = Case("BMP", lambda: bmp(40, 16))
CASES["bmp-pillow-rgb"] = Case("BMP", lambda: pillow(rgb(), "BMP"))
CASES["bmp-pillow-1bit"] = Case("BMP", lambda: pillow(rgb().convert("1"), "BMP"))
CASES["bmp-corpus-os2"] = Case("BMP", lambda: corpus("bmp-os2-valid.bmp"), size=(2, 49))

CASES.update({
    "png-rgb8": Case("PNG", lambda: pillow(rgb(), "PNG")),
    "png-gray8": Case("PNG", lambda: pillow(rgb().convert("L"), "PNG")),
    "png-gray16": Case("PNG", lambda: pillow(Image.fromarray(pixels(channels=1, dtype=np.uint16)), "PNG")),
    "png-rgb16": Case("PNG", lambda: opencv(".png", pixels(dtype=np.uint16))),
    "png-rgba": Case("PNG", lambda: pillow(rgb().convert("RGBA"), "PNG")),
    "png-palette": Case("PNG", lambda: pillow(rgb().convert("P"), "PNG")),
    "png-1bit": Case("PNG", lambda: pillow(rgb().convert("1"), "PNG")),
    "png-interlaced-rgb8": Case("PNG", lambda: png(pixels(), interlaced=True)),
    "png-interlaced-gray16": Case("PNG", lambda: png(pixels(channels=1, dtype=np.uint16), interlaced=True)),
    "png-hand-rgb8": Case("PNG", lambda: png(pixels(), interlaced=False)),
    "apng": Case("PNG", lambda: pillow(rgb(), "PNG", save_all=True, append_images=[rgb().rotate(180)])),
    "apng-default-image-apart": Case("PNG", lambda: pillow(rgb(), "PNG", save_all=True, default_image=True,
                                                           append_images=[rgb().rotate(180)])),

    "jpeg-baseline": Case("JPEG", lambda: pillow(rgb(), "JPEG", quality=90)),
    "jpeg-progressive": Case("JPEG", lambda: pillow(rgb(), "JPEG", quality=90, progressive=True)),
    "jpeg-extended-sof1": Case("JPEG", lambda: pillow(rgb(), "JPEG", qtables=[[300] * 64, [300] * 64])),
    "jpeg-gray": Case("JPEG", lambda: pillow(rgb().convert("L"), "JPEG")),
    "jpeg-cmyk": Case("JPEG", lambda: pillow(rgb().convert("CMYK"), "JPEG")),
    "jpeg-444": Case("JPEG", lambda: pillow(rgb(), "JPEG", subsampling=0)),
    "jpeg-large-exif": Case("JPEG", lambda: jpeg_with_exif(padding=60000)),
    "jpeg-large-icc": Case("JPEG", lambda: jpeg_with_icc(200_000)),
    "jpeg-fill-bytes": Case("JPEG", jpeg_with_fill_bytes),
    "jpeg-stray-bytes": Case("JPEG", jpeg_with_stray_bytes),
    "jpeg-exif-orientation-3": Case("JPEG", lambda: jpeg_with_exif(orientation=3)),
    "jpeg-exif-orientation-6": Case("JPEG", lambda: jpeg_with_exif(orientation=6), rotated=True),
    "jpeg-exif-orientation-8": Case("JPEG", lambda: jpeg_with_exif(orientation=8, padding=30000), rotated=True),

    "gif87a": Case("GIF", lambda: pillow(rgb().convert("P"), "GIF")),
    "gif89a-comment": Case("GIF", lambda: pillow(rgb().convert("P"), "GIF", comment=b"a comment extension")),
    "gif-interlaced": Case("GIF", lambda: pillow(rgb().convert("P"), "GIF", interlace=True)),
    "gif-screen-larger-than-frame": Case("GIF", gif_screen_larger_than_frame),
    "gif-animated": Case("GIF", lambda: pillow(rgb().convert("P"), "GIF", save_all=True,
                                               append_images=[rgb().rotate(180).convert("P")], duration=50)),

    "webp-lossy-vp8": Case("WebP", lambda: pillow(rgb(), "WEBP", quality=80)),
    "webp-lossy-scaling-bits": Case("WebP", webp_vp8_with_scaling_bits),
    "webp-lossless-vp8l": Case("WebP", lambda: pillow(rgb(), "WEBP", lossless=True)),
    "webp-lossless-rgba": Case("WebP", lambda: pillow(rgb().convert("RGBA"), "WEBP", lossless=True)),
    "webp-vp8x-alpha": Case("WebP", lambda: pillow(Image.fromarray(pixels(channels=4)), "WEBP", quality=80)),
    "webp-vp8x-exif": Case("WebP", lambda: pillow(rgb(), "WEBP", exif=jpeg_exif_bytes())),
    "webp-animated": Case("WebP", lambda: pillow(rgb(), "WEBP", save_all=True, append_images=[rgb().rotate(180)])),

    "tiff-pillow-rgb": Case("TIFF", lambda: pillow(rgb(), "TIFF")),
    "tiff-pillow-lzw": Case("TIFF", lambda: pillow(rgb(), "TIFF", compression="tiff_lzw")),
    "tiff-pillow-gray16": Case("TIFF", lambda: pillow(Image.fromarray(pixels(channels=1, dtype=np.uint16)), "TIFF")),
    "tiff-pillow-rgba": Case("TIFF", lambda: pillow(rgb().convert("RGBA"), "TIFF")),
    "tiff-little-short-long": Case("TIFF", lambda: tiff("<")),
    "tiff-little-long-short-directory-last": Case("TIFF", lambda: tiff("<", False, 4, 3, directory_last=True)),
    "tiff-big-short-long": Case("TIFF", lambda: tiff(">")),
    "tiff-big-short-short-directory-last": Case("TIFF", lambda: tiff(">", False, 3, 3, directory_last=True)),
    "tiff-repeated-width-tag": Case("TIFF", lambda: tiff("<", repeated_width=True)),
    "bigtiff-little-long8": Case("TIFF", lambda: tiff("<", True, 16, 16)),
    "bigtiff-big-short-long": Case("TIFF", lambda: tiff(">", True, 3, 4)),
    "tiff-tifffile-big-endian": Case("TIFF", lambda: tifffile_bytes([pixels()], byteorder=">")),
    "bigtiff-tifffile-little": Case("TIFF", lambda: tifffile_bytes([pixels()], bigtiff=True)),
    "bigtiff-tifffile-big": Case("TIFF", lambda: tifffile_bytes([pixels()], bigtiff=True, byteorder=">")),
    "tiff-tiled": Case("TIFF", lambda: tifffile_bytes([pixels()], tile=(32, 32))),
    "tiff-multipage-first-page": Case("TIFF", lambda: tifffile_bytes([pixels(), pixels(60, 50)])),

    "pbm-p1-comments": Case("PNM", lambda: b"P1\n# a comment with 99 99\n37 21\n" + pnm_raster("P1")),
    "pgm-p2-comment-between-sizes": Case("PNM", lambda: b"P2\n37 # width, then height\n21\n# maxval\n255\n"
                                         + pnm_raster("P2")),
    "ppm-p3-comment-ending-in-cr": Case("PNM", lambda: b"P3\n# an old Mac comment\r37 21\n255\n" + pnm_raster("P3")),
    "pbm-p4": Case("PNM", lambda: b"P4\n37 21\n" + pnm_raster("P4")),
    "pbm-p4-tab-and-comment": Case("PNM", lambda: b"P4 # a comment after the magic\n37\t21\n" + pnm_raster("P4")),
    # Netpbm lets a comment follow a token directly; OpenCV's reader consumes the '#' that ends a number and refuses
    "pbm-p4-comment-glued-to-magic": Case("PNM", lambda: b"P4#comment\n37 21\n" + pnm_raster("P4"), opencv=False),
    "ppm-p6-comment-glued-to-width": Case("PNM", lambda: b"P6\n37#comment\n21\n255\n" + pnm_raster("P6"),
                                          opencv=False),
    "pgm-p5-one-line": Case("PNM", lambda: b"P5 37 21 255\n" + pnm_raster("P5")),
    "pgm-p5-16bit": Case("PNM", lambda: b"P5\n37 21\n65535\n" + pnm_raster("P5", 65535)),
    "ppm-p6-comments-everywhere": Case("PNM", lambda: b"P6\n#c1\n#c2 12 34\n37 #c3\n21\n#c4\n1023\n"
                                       + pnm_raster("P6", 1023)),
    "ppm-p6-opencv": Case("PNM", lambda: opencv(".ppm", pixels())),
    "pgm-p5-opencv": Case("PNM", lambda: opencv(".pgm", pixels(channels=1))),
    "pam-opencv": Case("PNM", lambda: opencv(".pam", pixels())),
    "pam-comments-and-field-order": Case("PNM", lambda: pam(b"P7\n# WIDTH 99\n#HEIGHT 99\nHEIGHT 21\n  WIDTH 37\n"
                                                            b"DEPTH 1\nMAXVAL 255\nTUPLTYPE GRAYSCALE\nENDHDR\n")),
    "pam-rgb-alpha": Case("PNM", lambda: pam(b"P7\nWIDTH 37\nHEIGHT 21\nDEPTH 4\nMAXVAL 255\n"
                                             b"TUPLTYPE RGB_ALPHA\nENDHDR\n", depth=4)),
    "pfm-color": Case("PFM", lambda: opencv(".pfm", pixels().astype(np.float32) / 255)),
    "pfm-gray": Case("PFM", lambda: opencv(".pfm", pixels(channels=1).astype(np.float32) / 255)),
    "pfm-big-endian": Case("PFM", lambda: b"PF\n37 21\n1.0\n" + (pixels().astype(">f4") / 255).tobytes()),

    "hdr-opencv": Case("Radiance HDR", lambda: opencv(".hdr", pixels().astype(np.float32) / 255)),
    "hdr-minus-y-plus-x": Case("Radiance HDR", lambda: radiance(b"-Y 21 +X 37")),
    "hdr-rgbe-magic": Case("Radiance HDR", lambda: radiance(b"-Y 21 +X 37", magic=b"#?RGBE")),
    "hdr-plus-y-plus-x": Case("Radiance HDR", lambda: radiance(b"+Y 21 +X 37"), opencv=False),
    "hdr-minus-y-minus-x": Case("Radiance HDR", lambda: radiance(b"-Y 21 -X 37"), opencv=False),
    "hdr-plus-x-minus-y": Case("Radiance HDR", lambda: radiance(b"+X 37 -Y 21"), opencv=False),
    "hdr-minus-x-plus-y": Case("Radiance HDR", lambda: radiance(b"-X 37 +Y 21"), opencv=False),

    "sunras-opencv-24bit": Case("Sun raster", lambda: opencv(".ras", pixels())),
    "sunras-8bit-colormap": Case("Sun raster", lambda: sun_raster(8, colormap=True)),
    # RT_BYTE_ENCODED: OpenCV's header check tests its own m_type, not the file's type field, and refuses it
    "sunras-8bit-gray-encoded": Case("Sun raster", lambda: sun_raster(8, encoded=True), opencv=False),
    "sunras-1bit": Case("Sun raster", lambda: sun_raster(1)),

    "jp2": Case("JPEG 2000", lambda: pillow(rgb(), "JPEG2000")),
    "jp2-gray": Case("JPEG 2000", lambda: pillow(rgb().convert("L"), "JPEG2000")),
    "jp2-tiled": Case("JPEG 2000", lambda: pillow(rgb(), "JPEG2000", tile_size=(16, 16))),
    "jp2-irreversible": Case("JPEG 2000", lambda: pillow(rgb(), "JPEG2000", irreversible=True)),
    "jp2-xml-box-first": Case("JPEG 2000", lambda: jp2_with_box_before_header(b"xml ")),
    "jp2-uuid-box-first": Case("JPEG 2000", lambda: jp2_with_box_before_header(b"uuid")),
    "j2k-codestream": Case("JPEG 2000", lambda: pillow(rgb(), "JPEG2000", no_jp2=True)),
    "j2k-image-offset": Case("JPEG 2000", j2k_with_image_offset, opencv=False),

    "avif": Case("AVIF", lambda: pillow(rgb(), "AVIF"), needs="avif"),
    "avif-alpha": Case("AVIF", lambda: pillow(Image.fromarray(pixels(channels=4)), "AVIF"), needs="avif"),
    "avif-sequence": Case("AVIF", lambda: pillow(rgb(), "AVIF", save_all=True, append_images=[rgb().rotate(180)]),
                          needs="avif"),
})


@functools.lru_cache(maxsize=None)
def built(name: str) -> bytes:
    case = CASES[name]
    if case.needs and not features.check(case.needs):
        pytest.skip(f"this Pillow cannot write {case.needs}")
    return case.build()


@functools.lru_cache(maxsize=None)
def build_decodes(fmt: str) -> bool:
    """Whether this OpenCV build decodes the format at all: its plainest case, the first listed."""
    first = next(name for name, case in CASES.items() if case.fmt == fmt and case.opencv)
    return opencv_size(built(first)) is not None


# --- against the specification and OpenCV ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_declared_size_agrees_with_the_spec_and_opencv(name):
    case = CASES[name]
    data = built(name)
    assert sniff_format(data) == case.fmt
    declared = declared_size(data)
    assert declared == case.size, f"{name}: declared {declared}, the header says {case.size}"
    assert declared_size(bytearray(data)) == declared == declared_size(np.frombuffer(data, np.uint8))
    decoded = opencv_size(data)
    if not case.opencv:
        assert decoded is None, f"{name}: OpenCV now decodes this variant ({decoded}): make it a full case"
        return
    if decoded is None and not build_decodes(case.fmt):
        pytest.skip(f"this OpenCV build does not decode {case.fmt}")
    assert decoded is not None, f"{name}: OpenCV refused a valid file"
    if case.rotated:  # the pixel count is what the bomb check compares; EXIF turned the decoded image a quarter
        assert sorted(declared) == sorted(decoded) and decoded == declared[::-1]
    else:
        assert declared == decoded, f"{name}: declared {declared}, OpenCV decodes {decoded}"


def test_openexr_is_skipped_when_the_build_lacks_it(tmp_path):
    """No OpenEXR writer here but OpenCV's: with a build that has it, its files must sniff as OpenEXR, and the
    header size is left to OpenCV's own limit (declared_size answers None)."""
    probe = tmp_path / "probe.exr"
    probe.write_bytes(b"\x76\x2f\x31\x01\x02\x00\x00\x00" + bytes(64))
    with quiet_decoders():
        readable = cv2.haveImageReader(str(probe))
    if not readable:
        pytest.skip("this OpenCV build has no OpenEXR decoder (cv2.haveImageReader refuses the signature)")
    data = opencv(".exr", pixels().astype(np.float32))
    assert sniff_format(data) == "OpenEXR" and declared_size(data) is None and opencv_size(data) == (W, H)


# --- never raises on garbage -------------------------------------------------------------------------------------

def assert_harmless(data: bytes) -> None:
    started = time.perf_counter()
    size = declared_size(data)
    assert time.perf_counter() - started < 0.25, f"{len(data)} bytes took too long"
    assert size is None or (isinstance(size, tuple) and len(size) == 2
                            and all(type(side) is int and side >= 0 for side in size)), size
    assert isinstance(png_is_animated(data), bool)


@pytest.mark.parametrize("name", list(CASES))
def test_truncated_and_mutated_headers_never_raise(name):
    data = built(name)
    lengths = list(range(0, 65)) + list(range(65, min(len(data), 2048), 23)) + [len(data) // 2, len(data) - 1]
    for length in lengths:
        assert_harmless(data[:max(length, 0)])
    rng = random.Random(zlib.crc32(name.encode()))
    for _ in range(10):  # about 1,200 mutations over all cases, the same ones on every run
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(min(len(mutated), 256))
            choice = rng.random()
            if choice < 0.6:
                mutated[at] = rng.randrange(256)
            elif choice < 0.8:
                mutated[at:at + 4] = rng.choice((b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"))
            else:
                del mutated[at:at + rng.randint(1, 8)]
        assert_harmless(bytes(mutated))


def test_garbage_behind_every_signature_never_raises():
    rng = random.Random(7)
    signatures = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"GIF89a", b"BM", b"II*\x00",
                  b"MM\x00*", b"II+\x00", b"MM\x00+", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8X",
                  b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51", b"P6\n", b"P7\n", b"PF\n",
                  b"#?RADIANCE\n", b"\x59\xa6\x6a\x95", b"\x00\x00\x00\x1cftypavif", b"\x76\x2f\x31\x01")
    for signature in signatures:
        for _ in range(20):
            assert_harmless(signature + bytes(rng.randrange(256) for _ in range(rng.randrange(300))))
    assert declared_size(b"") is None and declared_size(b"not an image") is None


@pytest.mark.parametrize("data", [
    b"\xff\xd8\xff" + b"\xff" * (1 << 20),         # a megabyte of JPEG fill bytes
    b"\xff\xd8\xff" + b"\xff\x00" * (1 << 19),     # stuffed zeros, never a marker
    b"\xff\xd8\xff\xe1\x00\x02" * 200_000,          # empty segments, past the segment bound
    b"P6" + b" \t\r\n" * 2000 + b"x",               # PNM whitespace that ends in no number
    b"P6\n" + b"# a comment\n" * 400 + b"12",       # comments, then a number the window may cut
    b"P6 " + b"#" * 8000,                            # a comment that never ends
    b"P6\n" + b"9" * 8000,                           # a number longer than the window
    b"P7\n" + b"#\n" * 3000,                         # PAM without ENDHDR
    b"#?RADIANCE\n" + b"\n" * 5000,                   # no resolution string
    b"II*\x00\x08\x00\x00\x00\xff\xff" + bytes(12 * 5000),  # 65535 directory entries, none of them sizes
], ids=["jpeg-fill", "jpeg-stuffed", "jpeg-segments", "pnm-space", "pnm-comments", "pnm-open-comment",
        "pnm-long-number", "pam-no-end", "hdr-no-resolution", "tiff-long-directory"])
def test_pathological_headers_are_answered_quickly(data):
    """Backtracking regular expressions or byte-by-byte walks would take seconds to minutes on these."""
    assert_harmless(data)


def test_a_huge_declared_size_is_reported_not_refused_here():
    """The reader reports; the caller compares with its limit (a 65535 x 65535 OS/2 BMP, 4 Gpixel)."""
    data = bytearray(bmp(12, 24))
    data[18:22] = struct.pack("<HH", 65535, 65535)
    assert declared_size(bytes(data)) == (65535, 65535)
    big = bytearray(bmp(40, 24))
    big[18:26] = struct.pack("<ii", 100_000, -200_000)
    assert declared_size(bytes(big)) == (100_000, 200_000)


# --- APNG ------------------------------------------------------------------------------------------------------

def test_png_is_animated():
    still, animated = built("png-rgb8"), built("apng")
    assert not png_is_animated(still)
    assert png_is_animated(animated) and png_is_animated(built("apng-default-image-apart"))
    assert png_is_animated(bytearray(animated)) and png_is_animated(np.frombuffer(animated, np.uint8))
    acTL = animated.index(b"acTL") - 4
    assert all(not png_is_animated(animated[:length]) for length in range(0, acTL + 8))  # cut before its type
    # from its type on, it counts, cut short or not: OpenCV's APNG reader would see it
    assert all(png_is_animated(animated[:length]) for length in range(acTL + 8, acTL + 21))
    assert png_is_animated(b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffacTL")  # a broken length does not hide it
    for garbage in (b"", b"\x89PNG", b"\x89PNG\r\n\x1a\n", b"GIF89a" + animated[6:], bytes(300),
                    built("jpeg-baseline")):
        assert png_is_animated(garbage) is False


def test_png_is_animated_walks_chunks_not_bytes():
    """acTL after the first IDAT does not make an APNG; 'acTL' inside another chunk's data is not a chunk while the
    walk lasts; past 64 chunks any 'acTL' bytes before the first 'IDAT' bytes count (no APNG slips through)."""
    signature, header = b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    actl, idat, end = png_chunk(b"acTL", struct.pack(">II", 2, 0)), png_chunk(b"IDAT", zlib.compress(b"\0\0")), \
        png_chunk(b"IEND", b"")
    assert png_is_animated(signature + header + actl + idat + end)
    assert not png_is_animated(signature + header + idat + actl + end)
    assert not png_is_animated(signature + header + png_chunk(b"tEXt", b"k\0" + actl) + idat + end)
    text = png_chunk(b"tEXt", b"k\0v")
    assert png_is_animated(signature + header + text * 62 + actl + idat + end)  # the 64th chunk
    assert png_is_animated(signature + header + text * 63 + actl + idat + end)  # the 65th: by its bytes
    assert not png_is_animated(signature + header + text * 63 + idat + actl + end)  # after IDAT: still not
    hidden = png_chunk(b"tEXt", b"k\0" + actl)
    assert png_is_animated(signature + header + text * 63 + hidden + idat + end)  # past the bound: errs to True


def test_png_is_animated_on_the_corpus_apng():
    """A mutated APNG that crashes OpenCV: only its chunks are read here, never decoded."""
    assert png_is_animated(corpus("apng-mutated-segfaults-opencv.png"))

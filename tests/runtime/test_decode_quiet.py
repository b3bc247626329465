"""Decoder chatter stays off the terminal, and decode errors speak the user's language, not OpenCV's.

libpng and libjpeg print warnings with ``fprintf(stderr)`` and libtiff through OpenCV's logger; each case below made
at least one line on stderr before ``quiet_decoders`` (checked by the raw cv2 control run)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from auditor_rt.runtime.errors import ImageDecodeError, ImageTooLargeError
from auditor_rt.runtime.imageio import decode_image


def _chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc & 0xFFFFFFFF)


def noisy_files() -> dict[str, bytes]:
    """Files whose codecs warn or fail loudly: (name -> bytes)."""
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)

    def encoded(fmt: str, **params) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **params)
        return buffer.getvalue()

    png, jpeg, tiff = encoded("PNG"), encoded("JPEG"), encoded("TIFF")
    header_end = 8 + 25
    idat = png.index(b"IDAT")
    bad_idat = bytearray(png)
    bad_idat[idat + 4 + struct.unpack(">I", png[idat - 4:idat])[0]] ^= 0xFF
    scan = jpeg.index(b"\xff\xda")
    extra = TiffImagePlugin.ImageFileDirectory_v2()
    extra[65000] = "private"
    extra.tagtype[65000] = 2
    return {
        "png_text_crc.png": png[:header_end] + _chunk(b"tEXt", b"k\x00v", crc=1) + png[header_end:],  # warns, decodes
        "png_bad_srgb.png": png[:header_end] + _chunk(b"sRGB", b"\x09") + png[header_end:],           # warns, decodes
        "png_idat_crc.png": bytes(bad_idat),                                                           # error
        "jpeg_extraneous.jpg": jpeg[:scan] + b"\x00\x11\x22" + jpeg[scan:],                           # warns, decodes
        "jpeg_truncated.jpg": jpeg[:scan + 200],
        "tiff_private_tag.tif": encoded("TIFF", tiffinfo=extra),                                       # warns, decodes
        "tiff_truncated.tif": tiff[:len(tiff) // 2],                                                   # libtiff error
    }


SCRIPT = r"""
import ctypes, sys, threading
from pathlib import Path
folder = Path(sys.argv[1])
mode = sys.argv[2]
if mode == "raw":
    import cv2, numpy as np
    for path in sorted(folder.iterdir()):
        cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    sys.exit(0)
from auditor_rt.runtime.errors import ImageDecodeError
from auditor_rt.runtime.imageio import decode_image
results = {}
def decode(path):
    try:
        results[path.name] = "ok %dx%d" % decode_image(path).shape[1::-1]
    except ImageDecodeError as exc:
        results[path.name] = "error " + str(exc)
threads = [threading.Thread(target=decode, args=(p,)) for p in sorted(folder.iterdir()) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
for name in sorted(results): print(name, "|", results[name])
libc = ctypes.CDLL(None)
stderr = ctypes.c_void_p.in_dll(libc, "stderr")
libc.fputs(b"C stderr is back\n", stderr)
libc.fflush(stderr)
"""


@pytest.fixture
def noisy_folder(tmp_path):
    for name, data in noisy_files().items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def run(folder, mode: str) -> subprocess.CompletedProcess:
    env_free = {key: value for key, value in __import__("os").environ.items() if key != "OPENCV_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(folder), mode], capture_output=True, text=True,
                          timeout=120, env=env_free)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="C's stderr is reassigned on glibc only")
def test_codec_warnings_do_not_reach_stderr_and_stderr_works_afterwards(noisy_folder):
    raw = run(noisy_folder, "raw")
    assert "libpng" in raw.stderr and "Corrupt JPEG" in raw.stderr and "TIFF" in raw.stderr  # the control
    quiet = run(noisy_folder, "quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "C stderr is back\n"  # nothing else; C stdio works again after the decodes
    results = dict(line.split(" | ") for line in quiet.stdout.splitlines())
    for name in ("png_text_crc.png", "png_bad_srgb.png", "jpeg_extraneous.jpg", "tiff_private_tag.tif"):
        assert results[name] == "ok 48x48", (name, results[name])
    for name in ("png_idat_crc.png", "jpeg_truncated.jpg", "tiff_truncated.tif"):
        assert results[name].startswith("error") and "not a readable image" in results[name], results[name]
        assert "OpenCV(" not in results[name] and ".cpp" not in results[name]


def tiff_header(width: int, height: int, order: str = "<") -> bytes:
    """An uncompressed RGB TIFF whose first directory claims width x height, with 64 bytes of pixel data."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 2), (273, 4, 122),
               (277, 3, 3), (278, 4, height), (279, 4, 64)]
    out = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", 9)
    for tag, kind, value in entries:
        packed = struct.pack(order + ("H" if kind == 3 else "I"), value).ljust(4, b"\0")
        out += struct.pack(order + "HHI", tag, kind, 1) + packed
    return out + b"\0" * 4 + b"\0" * 64


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_tiff_claiming_a_huge_size_is_too_large_not_an_opencv_assertion(order):
    bomb = tiff_header(200_000, 200_000, order)
    with pytest.raises(ImageTooLargeError, match=r"200000x200000 is over the limit .* TIFF header") as caught:
        decode_image(bomb)
    assert "OpenCV(" not in str(caught.value) and "CV_IO" not in str(caught.value)


def test_opencvs_own_pixel_limit_also_reads_as_too_large():
    """With our limit raised past the header's claim, OpenCV's assertion (its own limit) is what refuses it: that
    must still be ImageTooLargeError (413 in serve), worded without OpenCV's source paths."""
    with pytest.raises(ImageTooLargeError, match="over OpenCV's limit") as caught:
        decode_image(tiff_header(200_000, 200_000), max_pixels=10**12)
    assert "/io/opencv" not in str(caught.value) and "Assertion" not in str(caught.value)


def test_no_decode_error_carries_opencv_internals(noisy_folder):
    cases = [*noisy_folder.iterdir(), b"GIF89a\x10\x00\x10\x00", b"II*\x00\x08\x00\x00\x00", b"\xff\x4f\xff\x51"]
    for case in cases:
        try:
            decode_image(case)
        except ImageDecodeError as exc:
            assert "OpenCV(" not in str(exc) and ".cpp" not in str(exc) and "error: (" not in str(exc), exc

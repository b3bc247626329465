"""Decoding every image form a user may hand us to RGB uint8 HxWx3, refusing bad ones by name, and resizing."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from auditor_rt.runtime.errors import ImageDecodeError
from auditor_rt.runtime.imageio import decode_image, is_image_path, load_for_model, resize_image

RED = (220, 20, 30)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.fixture
def rgb_array() -> np.ndarray:
    """A 12x20 image whose halves differ, so a channel swap or a flip is visible."""
    image = np.zeros((12, 20, 3), np.uint8)
    image[:, :10] = RED
    image[:, 10:] = (10, 200, 40)
    return image


def assert_rgb_uint8(image: np.ndarray, height: int, width: int) -> None:
    assert image.dtype == np.uint8
    assert image.shape == (height, width, 3)


# --- decoding good inputs --------------------------------------------------------------------------------------

def test_decode_png_from_path_and_bytes_gives_rgb(tmp_path, rgb_array):
    data = encode(Image.fromarray(rgb_array), "PNG")
    path = tmp_path / "image.png"
    path.write_bytes(data)
    for source in (path, str(path), data, bytearray(data), memoryview(data)):
        decoded = decode_image(source)
        assert_rgb_uint8(decoded, 12, 20)
        np.testing.assert_array_equal(decoded, rgb_array)  # RGB order, not OpenCV's BGR


def test_decode_jpeg_keeps_colour_order(tmp_path, rgb_array):
    path = tmp_path / "image.jpg"
    path.write_bytes(encode(Image.fromarray(rgb_array), "JPEG", quality=95))
    decoded = decode_image(path)
    assert_rgb_uint8(decoded, 12, 20)
    assert np.abs(decoded[6, 3].astype(int) - RED).max() < 20


def test_grayscale_png_is_replicated_to_three_channels():
    gray = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (5, 1))  # 5x20
    decoded = decode_image(encode(Image.fromarray(gray, "L"), "PNG"))
    assert_rgb_uint8(decoded, 5, 20)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], gray)


def test_rgba_png_drops_alpha():
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., :3] = (10, 120, 250)
    rgba[..., 3] = np.arange(7, dtype=np.uint8) * 40  # varying transparency must not leak into the colour
    decoded = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert_rgb_uint8(decoded, 6, 7)
    assert (decoded == np.array([10, 120, 250], np.uint8)).all()


def test_16_bit_png_is_scaled_to_8_bits_by_its_high_byte():
    high = np.tile(np.arange(0, 250, 25, dtype=np.uint16), (4, 1))  # 4x10
    low = 255 - high  # a decoder that kept the low byte would give the mirror image
    data16 = (high << 8) | low
    image = Image.fromarray(data16)  # mode I;16
    assert image.mode.startswith("I;16")
    decoded = decode_image(encode(image, "PNG"))
    assert_rgb_uint8(decoded, 4, 10)
    # high byte, rounded by at most one step
    assert np.abs(decoded[:, :, 0].astype(int) - high).max() <= 1
    assert (decoded[:, :, 0] == decoded[:, :, 2]).all()


def test_palette_png_is_expanded_to_its_colours():
    palette_image = Image.new("P", (9, 5))
    palette_image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette_image.paste(1, (0, 0, 4, 5))  # left: red
    palette_image.paste(2, (4, 0, 9, 5))  # right: blue
    decoded = decode_image(encode(palette_image, "PNG"))
    assert_rgb_uint8(decoded, 5, 9)
    assert tuple(decoded[2, 0]) == (255, 0, 0)
    assert tuple(decoded[2, 8]) == (0, 0, 255)


def test_cmyk_jpeg_is_converted_to_rgb():
    cmyk = Image.new("CMYK", (10, 8), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    decoded = decode_image(encode(cmyk, "JPEG", quality=95))
    assert_rgb_uint8(decoded, 8, 10)
    r, g, b = decoded[4, 5].astype(int)
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6 means 'rotate 90 degrees clockwise to display': a 40 wide x 20 high JPEG shows 20 x 40."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (250, 250, 250)  # left half white: after a clockwise turn it is the top half
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    for source in (path, data):
        decoded = decode_image(source)
        assert_rgb_uint8(decoded, 40, 20)
        assert decoded[5, 10].mean() > 200 and decoded[35, 10].mean() < 50


# --- arrays ----------------------------------------------------------------------------------------------------

def test_arrays_are_normalised_to_rgb_uint8(rgb_array):
    np.testing.assert_array_equal(decode_image(rgb_array), rgb_array)
    gray = rgb_array[:, :, 0]
    assert_rgb_uint8(decode_image(gray), 12, 20)
    assert_rgb_uint8(decode_image(gray[:, :, None]), 12, 20)
    rgba = np.dstack([rgb_array, np.zeros((12, 20), np.uint8)])
    np.testing.assert_array_equal(decode_image(rgba), rgb_array)
    wide = rgb_array.astype(np.uint16) << 8
    np.testing.assert_array_equal(decode_image(wide), rgb_array)


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((4, 4, 3), np.float32), "dtype float32"),
    (np.zeros((4, 4, 2), np.uint8), "shape (4, 4, 2)"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape (2, 4, 4, 3)"),
])
def test_bad_arrays_are_refused(array, fragment):
    with pytest.raises(ImageDecodeError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        decode_image(array)


# --- bad inputs ------------------------------------------------------------------------------------------------

def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageDecodeError, match="no such file") as info:
        decode_image(path)
    assert str(path) in str(info.value)


def test_zero_byte_file_is_refused_by_name(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty") as info:
        decode_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_and_corrupt_files_are_refused(tmp_path, fmt):
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)
    truncated = tmp_path / f"truncated.{fmt.lower()}"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="not a readable image") as info:
        decode_image(truncated)
    assert str(truncated) in str(info.value)
    corrupt = bytearray(data)
    corrupt[: 16] = b"\x00" * 16  # destroy the signature/header
    with pytest.raises(ImageDecodeError, match="buffer"):
        decode_image(bytes(corrupt))


def test_text_file_renamed_jpg_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not the pixels you are looking for\n" * 20)
    with pytest.raises(ImageDecodeError, match="not a readable image") as info:
        decode_image(path)
    assert str(path) in str(info.value)


def test_over_the_pixel_limit_is_refused_by_name(tmp_path, rgb_array):
    path = tmp_path / "big.png"
    path.write_bytes(encode(Image.fromarray(rgb_array), "PNG"))
    assert decode_image(path, max_pixels=240).shape == (12, 20, 3)  # exactly at the limit is fine
    with pytest.raises(ImageDecodeError, match="over the limit") as info:
        decode_image(path, max_pixels=239)
    assert str(path) in str(info.value) and "20x12" in str(info.value)


def test_decode_error_is_an_auditor_error():
    from auditor_rt.runtime.errors import AuditorError

    with pytest.raises(AuditorError):
        decode_image(b"garbage")


# --- resizing --------------------------------------------------------------------------------------------------

def test_resize_takes_height_then_width(rgb_array):
    resized = resize_image(rgb_array, (3, 5))
    assert resized.shape == (3, 5, 3) and resized.dtype == np.uint8


def test_resize_same_size_returns_the_image_untouched(rgb_array):
    assert resize_image(rgb_array, (12, 20)) is rgb_array


def test_shrinking_averages_areas_instead_of_aliasing():
    checker = ((np.indices((6, 6)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.dstack([checker] * 3)
    shrunk = resize_image(image, (2, 2))
    # each output pixel averages a 3x3 block (4 or 5 of 9 white): point sampling would give pure 0 or 255
    assert shrunk.min() >= 100 and shrunk.max() <= 155


def test_enlarging_interpolates():
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 200
    enlarged = resize_image(image, (4, 8))
    assert enlarged.shape == (4, 8, 3)
    row = enlarged[0, :, 0].astype(int)
    assert ((row > 0) & (row < 200)).any(), "bilinear gives intermediate values; nearest would not"
    assert (np.diff(row) >= 0).all()


def test_load_for_model_decodes_and_resizes(tmp_path, rgb_array):
    path = tmp_path / "image.png"
    path.write_bytes(encode(Image.fromarray(rgb_array), "PNG"))
    image = load_for_model(path, (8, 8))
    assert_rgb_uint8(image, 8, 8)
    assert tuple(image[4, 0]) == RED


@pytest.mark.parametrize("name, expected", [
    ("a.jpg", True), ("A.JPEG", True), ("b.Png", True), ("c.tiff", True), ("d.webp", True), ("g.GIF", True),
    ("h.ppm", True), ("i.jp2", True), ("e.txt", False), ("f.jpg.txt", False), ("noext", False), ("v.mp4", False),
])
def test_is_image_path(name, expected):
    assert is_image_path(name) is expected


@pytest.mark.parametrize("fmt, params", [("GIF", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}),
                                         ("PPM", {}), ("JPEG2000", {}), ("JPEG2000", {"no_jp2": True}),
                                         ("BMP", {})])
def test_header_sizes_of_the_other_formats(fmt, params):
    from auditor_rt.runtime.image_headers import declared_size

    data = encode(Image.fromarray(np.zeros((37, 53, 3), np.uint8)), fmt, **params)
    assert declared_size(data) == (53, 37)
    assert decode_image(data).shape == (37, 53, 3)  # and OpenCV agrees that it reads these


def test_big_endian_tiff_and_pnm_comments():
    from auditor_rt.runtime.image_headers import declared_size, sniff_format

    little = encode(Image.fromarray(np.zeros((7, 9), np.uint8)), "TIFF")
    assert little[:2] == b"II" and declared_size(little) == (9, 7)
    big = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2) + struct.pack(">HHIHH", 256, 3, 1, 9, 0) \
        + struct.pack(">HHII", 257, 4, 1, 7)  # a big-endian directory: SHORT width, LONG height
    assert declared_size(big) == (9, 7)
    pnm = b"P6\n# a comment 99 99\n11 5\n255\n" + bytes(11 * 5 * 3)
    assert sniff_format(pnm) == "PNM" and declared_size(pnm) == (11, 5)
    assert decode_image(pnm).shape == (5, 11, 3)
    assert sniff_format(b"PF\n3 2\n-1\n") == "PFM" and sniff_format(b"P") is None and sniff_format(b"") is None


@pytest.mark.parametrize("fmt, name", [("PNG", "PNG"), ("JPEG", "JPEG"), ("GIF", "GIF"), ("BMP", "BMP"),
                                       ("TIFF", "TIFF"), ("WEBP", "WebP"), ("JPEG2000", "JPEG 2000"),
                                       ("PPM", "PNM")])
def test_sniffing_names_the_format_from_its_magic_bytes(fmt, name):
    from auditor_rt.runtime.image_headers import sniff_format

    assert sniff_format(encode(Image.fromarray(np.zeros((4, 4, 3), np.uint8)), fmt)) == name
    assert sniff_format(b"hello world, not an image") is None


@pytest.mark.parametrize("fmt, params", [("PNG", {}), ("JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 64}),
                                         ("BMP", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80})])
def test_header_sizes_are_read_without_decoding(fmt, params):
    from auditor_rt.runtime.image_headers import declared_size

    data = encode(Image.fromarray(np.zeros((37, 53, 3), np.uint8)), fmt, **params)
    assert declared_size(data) == (53, 37)
    assert declared_size(b"not an image") is None and declared_size(data[:10]) in (None, (53, 37))


def test_a_decompression_bomb_is_refused_from_its_header_whatever_the_import_order(bomb_png):
    """A PNG that declares 20000 x 20000 pixels (1.2 GB decoded) with 4 kB of data: refused before decoding, even
    in a process where cv2 was imported before the runtime could set OpenCV's own limit."""
    import subprocess
    import sys

    bomb = bomb_png
    with pytest.raises(ImageDecodeError, match=r"20000x20000 is over the limit .*PNG header; refused before decoding"):
        decode_image(bomb)
    # cv2 first: OpenCV's own limit is then its default (1 G pixels). The peak is VmHWM, which exec resets
    # (ru_maxrss would carry the pytest parent's peak into the child).
    script = ("import cv2, re, sys\n"
              "from auditor_rt.runtime.imageio import decode_image\n"
              "try:\n    decode_image(sys.stdin.buffer.read())\nexcept Exception as exc:\n    print(exc)\n"
              "status = open('/proc/self/status').read()\n"
              "print(int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) // 1024)\n")
    run = subprocess.run([sys.executable, "-c", script], input=bomb, capture_output=True, timeout=120)
    message, peak_mb = run.stdout.decode().strip().splitlines()
    assert "over the limit" in message and int(peak_mb) < 500

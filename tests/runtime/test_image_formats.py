"""The accepted-formats list of serve: names parsed and checked, formats told by their bytes (APNG apart)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from auditor_rt.runtime.errors import ConfigError, FormatNotAcceptedError
from auditor_rt.runtime.image_formats import FORMATS, SERVE_DEFAULT, check_accepted, format_of, parse_formats

PIXELS = np.full((40, 64, 3), 90, np.uint8)  # OpenJPEG refuses much smaller pictures


def encoded(suffix: str) -> bytes:
    ok, data = cv2.imencode(suffix, PIXELS)
    assert ok, suffix
    return data.tobytes()


def apng() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).save(buffer, "PNG", save_all=True, append_images=[Image.fromarray(255 - PIXELS)])
    return buffer.getvalue()


def test_parse_formats():
    assert parse_formats("JPEG, png,png") == ("jpeg", "png")
    assert parse_formats("all") == tuple(FORMATS)
    with pytest.raises(ConfigError, match="unknown gifv"):
        parse_formats("jpeg,gifv")
    with pytest.raises(ConfigError, match="empty"):
        parse_formats(" , ")


@pytest.mark.parametrize("suffix, name", [(".jpg", "jpeg"), (".png", "png"), (".webp", "webp"), (".bmp", "bmp"),
                                          (".tif", "tiff"), (".jp2", "jp2"), (".ppm", "pnm"), (".ras", "sunras")])
def test_formats_are_told_by_their_bytes(suffix, name):
    assert format_of(encoded(suffix)) == name


def test_an_animated_png_is_apng_and_refused_by_default():
    assert format_of(apng()) == "apng" and "apng" not in SERVE_DEFAULT
    with pytest.raises(FormatNotAcceptedError, match="APNG, which this server does not accept.*--formats"):
        check_accepted(apng(), SERVE_DEFAULT, "image 0")
    assert check_accepted(apng(), ("png", "apng")) == "apng"
    assert check_accepted(encoded(".png"), SERVE_DEFAULT) == "png"


def test_unknown_bytes_are_named():
    with pytest.raises(FormatNotAcceptedError, match="not an image in a known format.*68 65 6c 6c 6f"):
        check_accepted(b"hello world", SERVE_DEFAULT)
    with pytest.raises(FormatNotAcceptedError, match="nothing"):
        check_accepted(b"", SERVE_DEFAULT)

"""The image formats a service accepts: a configurable list of names, checked against the bytes, not the
Content-Type or the file name.

Every format OpenCV can decode is a C++ parser exposed to whoever can send bytes. ``serve`` therefore decodes only
the formats it is told to accept (``--formats``), recognised by their magic bytes (``image_headers.sniff_format``),
and refuses the rest with a 415 before any decoder runs. An animated PNG (APNG) counts as a format of its own:
OpenCV reads it with a separate code path (the one a mutated APNG crashed), and an audit uses only its first frame.
"""

from __future__ import annotations

from auditor_rt.runtime.errors import ConfigError, FormatNotAcceptedError
from auditor_rt.runtime.image_headers import png_is_animated, sniff_format

# --formats name -> the name sniff_format gives (APNG is told apart from PNG by its acTL chunk).
FORMATS = {
    "jpeg": "JPEG", "png": "PNG", "apng": "APNG", "webp": "WebP", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF",
    "jp2": "JPEG 2000", "pnm": "PNM", "pfm": "PFM", "hdr": "Radiance HDR", "sunras": "Sun raster", "avif": "AVIF",
    "exr": "OpenEXR",
}
SERVE_DEFAULT = ("jpeg", "png", "webp", "bmp", "tiff", "gif")  # what photos and screenshots come as


def parse_formats(text: str) -> tuple[str, ...]:
    """'jpeg,png' -> ('jpeg', 'png'); 'all' -> every format; a name outside ``FORMATS`` is a ConfigError."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if names == ("all",):
        return tuple(FORMATS)
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"--formats {text!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; choose "
                          f"from {', '.join(FORMATS)}, or all")
    return names


def format_of(data) -> str | None:
    """The ``FORMATS`` name of encoded bytes ('jpeg', 'apng', ...), or None when they are in no known format."""
    kind = sniff_format(data[:16])
    if kind == "PNG" and png_is_animated(data):
        return "apng"
    return next((name for name, label in FORMATS.items() if label == kind), None)


def check_accepted(data, accepted: tuple[str, ...], what: str = "the image") -> str:
    """The format name of ``data`` when it is in ``accepted``, else ``FormatNotAcceptedError`` naming both."""
    name = format_of(data)
    if name is None:
        shown = bytes(data[:8]).hex(" ") if len(data) else "nothing"
        raise FormatNotAcceptedError(f"{what} is not an image in a known format (its first bytes are {shown}); "
                                     f"send {_listed(accepted)}")
    if name not in accepted:
        raise FormatNotAcceptedError(f"{what} is {FORMATS[name]}, which this server does not accept; it takes "
                                     f"{_listed(accepted)} (--formats)")
    return name


def _listed(accepted: tuple[str, ...]) -> str:
    return ", ".join(FORMATS[name] for name in accepted)

"""Image decoding and resizing with OpenCV, shared by the runtime and by training so both see the same pixels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from auditor_rt.runtime import native_errno
from auditor_rt.runtime.errors import DecodeTooCostlyError, ImageDecodeError, ImageTooLargeError
from auditor_rt.runtime.image_headers import declared_size, sniff_format
from auditor_rt.runtime.imageio_limits import DEFAULT_MAX_PIXELS
from auditor_rt.runtime.quiet_decoders import quiet_decoders

# The extensions of the formats OpenCV decodes. Only ``is_image_path`` (training data, verify's image folders) uses
# them: sources and the decoder look at a file's first bytes instead, so a misnamed or unusual file is not lost.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif", ".pbm",
                    ".pgm", ".ppm", ".pnm", ".pxm", ".pam", ".pfm", ".jp2", ".j2k", ".jpc", ".jpf", ".jpx", ".hdr",
                    ".pic", ".sr", ".ras", ".avif")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]


def decode_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a path, an encoded buffer or an array to an RGB uint8 HxWx3 image, in this process.

    EXIF orientation is applied, grayscale is replicated, alpha is dropped and 16-bit data is scaled to 8 bits, so
    every source reaches the model in the same form. Raises ``ImageDecodeError`` (``ImageTooLargeError`` past
    ``max_pixels``, ``DecodeTooCostlyError`` when the codec runs out of memory) naming the source and the cause in
    the user's terms, never OpenCV's internals; the codecs' own warnings are kept off the terminal.

    This runs OpenCV's C++ decoders in the calling process: a codec bug that a hostile file triggers can crash it.
    ``infer`` and ``serve`` decode untrusted files in a ``DecoderPool`` instead (``runtime/decoder_pool.py``).
    """
    if isinstance(source, np.ndarray):
        return _as_rgb_array(source, "array")
    name, data = read_encoded(source, max_pixels)
    return cv2.cvtColor(decode_bgr(data, name, max_pixels), cv2.COLOR_BGR2RGB)


def decode_all(images) -> list[np.ndarray]:
    """One source or a sequence of them (paths, buffers, arrays; a 4-D array is a batch) -> RGB uint8 arrays."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    return [decode_image(image) for image in images]


def read_encoded(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, np.ndarray]:
    """(a name for messages, the encoded bytes as a uint8 array) of a path or a buffer. A file larger than any
    image of ``max_pixels`` could be (uncompressed 16-bit RGBA) is refused unread."""
    if not isinstance(source, (str, os.PathLike)):
        return "buffer", np.frombuffer(source, dtype=np.uint8)
    name, path = str(source), Path(source)
    if not path.is_file():
        raise ImageDecodeError(f"{name}: no such file")
    size = path.stat().st_size
    if size > max_encoded_bytes(max_pixels):
        raise ImageTooLargeError(f"{name}: the file is {size / 2**20:.0f} MiB, more than an image of {max_pixels} "
                                 "pixels can take even uncompressed; refused unread")
    try:
        return name, np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageDecodeError(f"{name}: cannot read the file ({exc.strerror or exc})") from None


def max_encoded_bytes(max_pixels: int) -> int:
    return max_pixels * 8 + (1 << 20)  # 16-bit RGBA, uncompressed, plus headers


def decode_bgr(data: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    """OpenCV's BGR decode of encoded bytes, with the header's pixel count checked first (see ``decode_image``)."""
    if data.size == 0:
        raise ImageDecodeError(f"{name}: the file is empty (0 bytes)")
    head = data[:16].tobytes()
    kind = sniff_format(head)  # only names the format: OpenCV, not this, decides what it decodes
    declared = declared_size(data) if kind else None
    if declared is not None and declared[0] * declared[1] > max_pixels:
        raise ImageTooLargeError(f"{name}: {declared[0]}x{declared[1]} is over the limit of {max_pixels} pixels "
                                 f"(declared by its {kind} header; refused before decoding)")
    native_errno.clear()
    try:
        with quiet_decoders():
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):  # OpenCV's own limit, for formats whose header we do not read
            raise ImageTooLargeError(f"{name}: the {kind or 'image'} is over OpenCV's limit of "
                                     f"{_opencv_pixel_limit()} pixels (refused before decoding; the limit is "
                                     "OPENCV_IO_MAX_IMAGE_PIXELS)") from None
        if "Failed to allocate" in str(exc) or "Insufficient memory" in str(exc):
            raise _out_of_memory(name, kind) from None
        bgr = None  # any other failure reads as unreadable: OpenCV's text names its source files, not the cause
    except MemoryError:
        raise _out_of_memory(name, kind) from None
    if bgr is None:
        if native_errno.is_out_of_memory():  # OpenCV swallows a codec's std::bad_alloc and returns nothing
            raise _out_of_memory(name, kind)
        if kind is None:
            raise ImageDecodeError(f"{name}: not a readable image: {unsupported_reason(name, head)}")
        raise ImageDecodeError(f"{name}: not a readable image (a corrupt or truncated {kind} file, or a {kind} "
                               "variant that OpenCV does not decode)")
    height, width = bgr.shape[:2]
    if height * width > max_pixels:
        raise ImageTooLargeError(f"{name}: {width}x{height} is over the limit of {max_pixels} pixels")
    return bgr


def _out_of_memory(name: str, kind: str | None) -> DecodeTooCostlyError:
    return DecodeTooCostlyError(f"{name}: too costly to decode: the {kind or 'image'} decoder ran out of memory "
                                "(a corrupt or hostile file can declare gigabytes of data)")


def undecodable_reason(path: Union[str, os.PathLike]) -> str | None:
    """None when one of OpenCV's decoders claims the file by its signature (``cv2.haveImageReader`` reads the first
    bytes only), else why the file cannot be audited. The answer follows the OpenCV build, so a format it gains
    (GIF came in 4.11) is audited without a code change here."""
    with quiet_decoders():
        if cv2.haveImageReader(str(path)):
            return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc})"
    if not head:
        return "the file is empty (0 bytes)"
    return unsupported_reason(str(path), head)


def unsupported_reason(name: str, head: bytes) -> str:
    """'unsupported format (.xyz)', with what the file is when that is known (a video, a format OpenCV lacks)."""
    from auditor_rt.runtime.streams import VIDEO_SUFFIXES

    suffix = Path(name).suffix.lower() if name != "buffer" else ""
    kind = sniff_format(head)
    label = f"unsupported format ({suffix or 'no extension'})" if name != "buffer" else "unsupported format"
    if kind is not None:
        return f"{label}: a {kind} file, which this OpenCV build does not decode"
    if suffix in VIDEO_SUFFIXES:
        return f"{label}: a video; name it as a source of its own to score its frames"
    return f"{label}: the content is not in a format that OpenCV decodes (JPEG, PNG, GIF, BMP, TIFF, WebP, PNM, " \
           "JPEG 2000, ...)"


def _as_rgb_array(image: np.ndarray, name: str) -> np.ndarray:
    """Accept HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) arrays of uint8 (or uint16, scaled down)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageDecodeError(f"{name}: expected a uint8 image array, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"{name}: expected an HxW, HxWx3 or HxWx4 array, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC image to (height, width): area averaging to shrink (no aliasing), bilinear to enlarge."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] * image.shape[1] > height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bring a float 2-D map (heatmap, attribution) to (height, width) bilinearly; a no-op at that size already."""
    height, width = size
    if values.shape == (height, width):
        return values
    return cv2.resize(values.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def load_for_model(source: ImageSource, size: tuple[int, int]) -> np.ndarray:
    """Decode and resize in one step: the uint8 HxWx3 RGB array that an artifact's graph takes."""
    return resize_image(decode_image(source), size)


def is_image_path(path: Union[str, os.PathLike]) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _opencv_pixel_limit() -> str:
    return os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "1073741824")  # OpenCV's default is 2**30

"""Image decoding and resizing with OpenCV, shared by the runtime and by training so both see the same pixels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from auditor_rt.runtime.errors import ImageDecodeError, ImageTooLargeError
from auditor_rt.runtime.image_headers import JPEG_SCAN_LIMIT, declared_size
from auditor_rt.runtime.imageio_limits import DEFAULT_MAX_PIXELS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]


def decode_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a path, an encoded buffer or an array to an RGB uint8 HxWx3 image.

    EXIF orientation is applied, grayscale is replicated, alpha is dropped and 16-bit data is scaled to 8 bits, so
    every source reaches the model in the same form. Raises ``ImageDecodeError`` naming the source and the cause.
    """
    if isinstance(source, np.ndarray):
        return _as_rgb_array(source, "array")
    name = "buffer"
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"{name}: no such file")
        data = np.fromfile(path, dtype=np.uint8)
    else:
        data = np.frombuffer(source, dtype=np.uint8)
    if data.size == 0:
        raise ImageDecodeError(f"{name}: the file is empty (0 bytes)")
    declared = declared_size(data[:JPEG_SCAN_LIMIT].tobytes())
    if declared is not None and declared[0] * declared[1] > max_pixels:
        raise ImageTooLargeError(f"{name}: {declared[0]}x{declared[1]} is over the limit of {max_pixels} pixels "
                               "(refused before decoding)")
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV raises for images past its own pixel limit
        raise ImageDecodeError(f"{name}: OpenCV refused to decode it ({_last_line(exc)})") from None
    if bgr is None:
        raise ImageDecodeError(f"{name}: not a readable image (corrupt, truncated or an unsupported format)")
    height, width = bgr.shape[:2]
    if height * width > max_pixels:
        raise ImageTooLargeError(f"{name}: {width}x{height} is over the limit of {max_pixels} pixels")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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


def _last_line(exc: Exception) -> str:
    """OpenCV's messages end with the useful line; the ones before it are source locations."""
    text = str(exc).strip().splitlines()
    return text[-1].strip() if text else type(exc).__name__

"""Pictures for people: heatmap overlays, region boxes and contact sheets (all RGB uint8)."""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from auditor_rt.runtime.errors import OutputError
from auditor_rt.runtime.imageio import resize_map
from auditor_rt.runtime.regions import Region


def _diverging_lut() -> np.ndarray:
    """Blue (against) -> white (0) -> red (for), as a 256x1x3 RGB lookup table."""
    t = np.linspace(-1.0, 1.0, 256)[:, None]
    blue, white, red = np.array([33, 102, 172]), np.array([247, 247, 247]), np.array([178, 24, 43])
    lut = np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t)
    return lut.astype(np.uint8)[:, None, :]


DIVERGING_LUT = _diverging_lut()


def colorize(values: np.ndarray, signed: bool = False, scale: float | None = None) -> np.ndarray:
    """Map a 2-D map to RGB: unsigned [0,1] maps use TURBO; signed maps are scaled by ``scale`` (default max |v|)
    and use red (for) / blue (against)."""
    values = np.asarray(values, dtype=np.float32)
    if signed:
        scale = scale or float(np.abs(values).max()) or 1.0
        index = np.clip((values / scale + 1.0) * 127.5, 0, 255).astype(np.uint8)
        return DIVERGING_LUT[index, 0]
    index = np.clip(values * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(index, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Alpha-blend a colourised [0, 1] map over an RGB image; the map is resized to the image first. (Signed
    attribution maps are drawn by ``mapview.attribution_view``.)"""
    return cv2.addWeighted(image, 1.0 - alpha, colorize(resize_map(heat, image.shape[:2])), alpha, 0.0)


def draw_regions(image: np.ndarray, regions: Sequence[Region], color=(255, 255, 255)) -> np.ndarray:
    out = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 200))
    for region in regions:
        cv2.rectangle(out, (region.x0, region.y0), (region.x1 - 1, region.y1 - 1), color, thickness)
    return out


def draw_caption(image: np.ndarray, text: str, color=(255, 255, 255)) -> np.ndarray:
    """Write ``text`` on a dark band along the top edge."""
    out = image.copy()
    scale = max(0.4, min(image.shape[:2]) / 500)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (min(out.shape[1], tw + 8), th + base + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return out


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str] | None = None,
                  thumb: int | tuple[int, int] = 192, columns: int | None = None) -> np.ndarray:
    """Tile images (each letterboxed into a thumb x thumb cell, or a (height, width) one) into one RGB sheet, with
    optional captions."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"contact_sheet got {len(images)} images but {len(captions)} captions")
    cell_h, cell_w = (thumb, thumb) if isinstance(thumb, int) else thumb
    columns = columns or min(len(images), max(1, math.ceil(math.sqrt(len(images) * 1.5))))
    rows = math.ceil(len(images) / columns)
    sheet = np.full((rows * cell_h, columns * cell_w, 3), 32, dtype=np.uint8)
    for i, image in enumerate(images):
        tile = letterbox(image, (cell_h, cell_w))
        if captions is not None:
            tile = draw_caption(tile, captions[i])
        r, c = divmod(i, columns)
        sheet[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w] = tile
    return sheet


def letterbox(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Fit ``image`` into a size x size square (or a (height, width) cell), keeping its aspect ratio."""
    cell_h, cell_w = (size, size) if isinstance(size, int) else size
    height, width = image.shape[:2]
    scale = min(cell_h / height, cell_w / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    tile = np.full((cell_h, cell_w, 3), 32, dtype=np.uint8)
    top, left = (cell_h - new_h) // 2, (cell_w - new_w) // 2
    tile[top:top + new_h, left:left + new_w] = resized
    return tile


def write_rgb(path, image: np.ndarray) -> None:
    """Write an RGB image with OpenCV (which expects BGR). JPEGs keep full colour resolution (4:4:4): the default
    4:2:0 halves it, which greys out the thin red and blue of attribution maps and blurs the legends."""
    params = []
    if str(path).lower().endswith((".jpg", ".jpeg")):
        params = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
        raise OutputError(f"could not write {path}: is the disk full or the folder read-only?")

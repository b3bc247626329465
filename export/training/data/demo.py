"""A small offline demo data set: real photographs, half of them holding a striped warning triangle.

The backgrounds are the photographs that scikit-image ships inside its wheel (read straight from its folder, so
nothing can be downloaded), which gives a frozen ImageNet backbone natural textures rather than flat noise. The
hazard is small, rotated and placed anywhere, and a third of the negatives hold a distractor of the same yellow (a
plain triangle or disc), so a model must find the black-and-yellow stripes, not just yellow.
Boxes are written for localisation scoring, tight around the drawn hazard in the saved image's pixels.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from auditor_rt.export.errors import DataError
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.imageio import decode_image, resize_image

# Photographs bundled with scikit-image (no pooch download); synthetic ones such as logo or colorwheel are left out.
_SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png", "coffee": "coffee.png", "chelsea": "chelsea.png", "rocket": "rocket.jpg",
    "camera": "camera.png", "coins": "coins.png", "moon": "moon.png", "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png", "retina": "retina.jpg", "motorcycle": "motorcycle_left.png",
    "brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png", "clock": "clock_motion.png",
    "text": "text.png", "page": "page.png", "cell": "cell.png",
}
YELLOW = (255, 205, 0)
BLACK = (20, 20, 20)
_SUPERSAMPLE = 4  # shapes are drawn 4x larger and shrunk, for anti-aliased edges
_DISTRACTORS = ("plain_triangle", "plain_disc")


@dataclass(frozen=True)
class DemoData:
    root: Path
    train_manifest: Path
    test_manifest: Path
    n_train: int
    n_test: int
    size: int


def make_demo_dataset(root, n_train: int = 240, n_test: int = 48, size: int = 224, seed: int = 0) -> DemoData:
    """Write ``root/images/{train,test}/NNNN.jpg`` and ``root/{train,test}.csv``; the same seed gives the same bytes."""
    if n_train < 2 or n_test < 2:
        raise ConfigError(f"the demo needs at least 2 train and 2 test images, got {n_train} and {n_test}")
    if size < 32:
        raise ConfigError(f"the demo image size must be at least 32 pixels, got {size}")
    root = Path(root)
    backgrounds = demo_backgrounds()
    manifests = {}
    for split_id, (split, count) in enumerate((("train", n_train), ("test", n_test))):
        folder = root / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        labels = np.random.default_rng([seed, split_id]).permutation([1] * (count // 2) + [0] * (count - count // 2))
        rows = []
        for index, label in enumerate(labels):
            rng = np.random.default_rng([seed, split_id, index])
            image, box = render_demo_image(rng, backgrounds, size, positive=bool(label))
            relative = f"images/{split}/{index:04d}.jpg"
            _write_jpeg(root / relative, image)
            rows.append([relative, int(label), *(box if box else ("", "", "", ""))])
        manifests[split] = root / f"{split}.csv"
        with open(manifests[split], "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "x0", "y0", "x1", "y1"])
            writer.writerows(rows)
    return DemoData(root, manifests["train"], manifests["test"], n_train, n_test, size)


def demo_backgrounds() -> list[tuple[str, np.ndarray]]:
    """The real photographs available offline here, as (name, RGB uint8 array); read-only, shared between calls."""
    return list(_load_backgrounds())


@lru_cache(maxsize=1)
def _load_backgrounds() -> tuple[tuple[str, np.ndarray], ...]:
    try:
        import skimage.data
    except ImportError:
        from auditor_rt.export.versions import INSTALL_HINT

        raise DataError(f"the demo data set needs scikit-image, which is not installed; {INSTALL_HINT}") from None
    folder = Path(skimage.data.__file__).parent
    found = [(name, decode_image(folder / file)) for name, file in _SKIMAGE_PHOTOS.items() if (folder / file).is_file()]
    # Only scikit-image's photographs: an optional extra source (scikit-learn ships two) would make the demo data,
    # and so its numbers, depend on what else happens to be installed.
    if not found:
        raise DataError(f"no scikit-image sample photographs found in {folder}; reinstall scikit-image")
    for _, image in found:
        image.setflags(write=False)
    return tuple(found)


def render_demo_image(rng, backgrounds, size: int, positive: bool) -> tuple[np.ndarray, Optional[tuple]]:
    """One RGB uint8 image and, for a positive, the hazard's half-open box (x0, y0, x1, y1)."""
    _, background = backgrounds[rng.integers(len(backgrounds))]
    image = _jittered_crop(rng, background, size)
    taken = []
    if rng.random() < (0.2 if positive else 0.35):
        _paste(rng, image, _DISTRACTORS[rng.integers(len(_DISTRACTORS))], taken)
    box = _paste(rng, image, "hazard", taken) if positive else None
    return np.clip(image, 0, 255).astype(np.uint8), box


def _jittered_crop(rng, background: np.ndarray, size: int) -> np.ndarray:
    """A random crop (40-100% of the short side, mild aspect change), flip and brightness/contrast change."""
    height, width = background.shape[:2]
    side = rng.uniform(0.4, 1.0) * min(height, width)
    aspect = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    crop_h = min(height, max(8, round(side / math.sqrt(aspect))))
    crop_w = min(width, max(8, round(side * math.sqrt(aspect))))
    y0 = rng.integers(0, height - crop_h + 1)
    x0 = rng.integers(0, width - crop_w + 1)
    crop = background[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    image = resize_image(np.ascontiguousarray(crop), (size, size)).astype(np.float32)
    mean = image.mean()
    return (image - mean) * rng.uniform(0.75, 1.25) + mean + rng.uniform(-25, 25)


def _paste(rng, image: np.ndarray, kind: str, taken: list) -> tuple[int, int, int, int]:
    """Draw a shape at a random place that overlaps nothing drawn before; return its tight box."""
    size = image.shape[0]
    radius = rng.uniform(0.12, 0.25) * size / 2
    colour, alpha = _draw_shape(kind, radius, rng.uniform(0, 360), rng)
    canvas = alpha.shape[0]
    for _ in range(20):
        x, y = (int(v) for v in rng.integers(0, size - canvas + 1, size=2))
        box = _tight_box(alpha, x, y)
        if not any(_overlaps(box, other) for other in taken):
            break
    region = image[y : y + canvas, x : x + canvas]
    region[:] = alpha[..., None] * colour * rng.uniform(0.8, 1.1) + (1 - alpha[..., None]) * region
    taken.append(box)
    return box


def _draw_shape(kind: str, radius: float, angle: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Colour (float RGB) and coverage (0..1) of one shape, rotated by ``angle`` degrees, on a square canvas."""
    canvas = 2 * math.ceil(radius) + 4
    k = _SUPERSAMPLE
    centre, r = canvas * k / 2, radius * k
    yy, xx = np.mgrid[0 : canvas * k, 0 : canvas * k].astype(np.float32) + 0.5
    theta = math.radians(angle)
    # Diagonal stripes that turn with the shape, about three black/yellow pairs across it.
    along = (xx - centre) * math.cos(theta + math.pi / 4) + (yy - centre) * math.sin(theta + math.pi / 4)
    striped = np.floor(along / (0.35 * r)).astype(np.int64) % 2 == 1
    yellow = np.clip(np.array(YELLOW, np.float32) + rng.uniform(-15, 15, 3), 0, 255)
    colour = np.empty((canvas * k, canvas * k, 3), np.float32)
    colour[:] = yellow
    outer = np.zeros((canvas * k, canvas * k), np.uint8)
    if kind in ("hazard", "plain_triangle"):
        cv2.fillPoly(outer, [_polygon(centre, r, angle - 90, 3)], 1)
        inner = np.zeros_like(outer)
        cv2.fillPoly(inner, [_polygon(centre, 0.72 * r, angle - 90, 3)], 1)
        if kind == "hazard":
            colour[striped] = BLACK
        colour[(outer == 1) & (inner == 0)] = BLACK  # the black rim of a warning triangle
    elif kind == "plain_disc":
        cv2.circle(outer, (round(centre), round(centre)), round(0.8 * r), 1, -1)
    else:
        raise ValueError(f"unknown demo shape {kind!r}")
    shrink = (canvas, canvas)
    return cv2.resize(colour, shrink, interpolation=cv2.INTER_AREA), cv2.resize(
        outer.astype(np.float32), shrink, interpolation=cv2.INTER_AREA
    )


def _polygon(centre: float, radius: float, start_deg: float, corners: int) -> np.ndarray:
    angles = np.radians(start_deg + np.arange(corners) * 360.0 / corners)
    points = np.stack([centre + radius * np.cos(angles), centre + radius * np.sin(angles)], axis=1)
    return np.round(points).astype(np.int32)


def _tight_box(alpha: np.ndarray, x: int, y: int) -> tuple[int, int, int, int]:
    """Half-open box of the pixels at least half covered by the shape, in the image's coordinates."""
    rows, cols = np.nonzero(alpha >= 0.5)
    return x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1, y + int(rows.max()) + 1


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode the demo image as JPEG")
    path.write_bytes(data.tobytes())

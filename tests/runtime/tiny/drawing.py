"""Test images for the tiny artifacts, drawn with numpy: ``from tiny.drawing import red_square``."""

from __future__ import annotations

import numpy as np

RED = (255, 0, 0)  # what the tiny risk head flags
GREY = (128, 128, 128)


def red_square(size: tuple[int, int] = (96, 96), box: tuple[int, int, int, int] | None = None,
               background=GREY, seed: int | None = None) -> np.ndarray:
    """An RGB image: ``background`` (or mild noise around it with a seed) with a pure red rectangle
    ``box`` = (x0, y0, x1, y1), which the tiny risk head flags."""
    height, width = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    if seed is not None:
        noise = np.random.default_rng(seed).integers(-20, 21, image.shape)
        image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        image[y0:y1, x0:x1] = RED
    return image

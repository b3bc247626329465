"""Boxes around connected high-heat areas of a heatmap, so a reviewer can see where the model looked."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    """A box (x0, y0, x1, y1; x1/y1 exclusive) in the original image's pixels, its area and its heat."""

    x0: int
    y0: int
    x1: int
    y1: int
    area: int
    peak: float
    mean: float

    def to_dict(self) -> dict:
        return asdict(self)


def find_regions(heatmap: np.ndarray, threshold: float = 0.5, min_area_fraction: float = 0.002,
                 max_regions: int = 5) -> list[Region]:
    """Connected components of ``heatmap >= threshold`` (heatmap in [0, 1]), largest peak first."""
    mask = (heatmap >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = max(1, int(min_area_fraction * heatmap.size))
    regions = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        values = heatmap[labels == label]
        regions.append(Region(x, y, x + w, y + h, area, float(values.max()), float(values.mean())))
    regions.sort(key=lambda r: (-r.peak, -r.area))
    return regions[:max_regions]

"""How alike two batches of maps are, image by image: cosine, Spearman rank correlation, top-region IoU, and how
much maps change from one input to another. Values only (numpy)."""

from __future__ import annotations

import numpy as np

TOP_FRACTION = 0.10  # the "top-10% region" of a map, for its IoU
TIE = 1e-5  # values this close (relative to a map's scale) count as tied at the top region's cut


def flat_per_image(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1).astype(np.float64)


def cosine_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = flat_per_image(a), flat_per_image(b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    # Two all-zero maps agree; one all-zero map against another does not.
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(
        (np.abs(a).max(axis=1) == 0) & (np.abs(b).max(axis=1) == 0), 1.0, 0.0))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks of each row (ties share their mean rank), as Spearman's coefficient needs."""
    ranks = np.empty_like(values)
    for row, line in enumerate(values):
        _, inverse, counts = np.unique(line, return_inverse=True, return_counts=True)
        starts = np.cumsum(counts) - counts
        ranks[row] = (starts + (counts - 1) / 2.0)[inverse]
    return ranks


def spearman_per_image(actual: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rank correlation of each image's map with its reference; 1 for two constant maps, 0 for a constant one
    against a varying one. Cells that the reference ties exactly (a symmetric map of a uniform image has many)
    carry no order, so the backend's ranks are averaged within each such group: rounding noise that orders them
    is not a disagreement."""
    flat_a, flat_r = flat_per_image(actual), flat_per_image(reference)
    ra, rr = _ranks(flat_a), _ranks(flat_r)
    for row, line in enumerate(flat_r):
        _, groups, counts = np.unique(line, return_inverse=True, return_counts=True)
        ra[row] = (np.bincount(groups, weights=ra[row]) / counts)[groups]
    ra -= ra.mean(axis=1, keepdims=True)
    rr -= rr.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ra, axis=1) * np.linalg.norm(rr, axis=1)
    both_flat = (np.abs(ra).max(axis=1) == 0) & (np.abs(rr).max(axis=1) == 0)
    return np.where(norms > 0, (ra * rr).sum(axis=1) / np.where(norms > 0, norms, 1.0), np.where(both_flat, 1.0, 0.0))


def top_region_iou(actual: np.ndarray, reference: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """IoU of each map's top region: the cells within ``TIE`` (of the map's scale) of its k-th largest value or
    above, k = ``fraction`` of the cells. Near-ties at the cut belong to the region in both maps, so rounding noise
    cannot move cells across it."""
    flat_a, flat_r = flat_per_image(actual), flat_per_image(reference)
    k = max(1, int(round(fraction * flat_a.shape[1])))
    ious = []
    for row_a, row_r in zip(flat_a, flat_r):
        regions = []
        for row in (row_a, row_r):
            cut = np.partition(row, -k)[-k]
            regions.append(row >= cut - TIE * max(float(np.abs(row).max()), 1e-30))
        union = np.logical_or(*regions).sum()
        ious.append(float(np.logical_and(*regions).sum() / union) if union else 1.0)
    return np.asarray(ious)


def pairwise_spread(maps: np.ndarray) -> float:
    """Sum over image pairs of the mean |difference| of their maps, each map scaled by its own max |value|: how much
    the maps change from one input to another. A map frozen at export has none."""
    flat = flat_per_image(maps)
    scales = np.abs(flat).max(axis=1, keepdims=True)
    flat = flat / np.where(scales > 0, scales, 1.0)
    total = 0.0
    for i in range(len(flat)):
        total += float(np.abs(flat[i + 1:] - flat[i]).mean(axis=1).sum()) if i + 1 < len(flat) else 0.0
    return total

"""Ranking metrics, threshold choice and the pointing game, in numpy so they need no extra package."""

from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class is absent."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP as sum over thresholds of (recall step) x precision, tied scores forming one threshold (as sklearn)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order]
    distinct = np.r_[np.diff(scores[order]) != 0, True]  # evaluate only at threshold boundaries
    tp = np.cumsum(hits)[distinct]
    fp = np.cumsum(~hits)[distinct]
    precision = tp / (tp + fp)
    recall = tp / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold that maximises balanced accuracy (Youden's J) on held-out data."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    candidates = np.unique(scores)
    if labels.all() or (~labels).all() or len(candidates) < 2:
        return 0.5
    best, best_j = 0.5, -np.inf
    for threshold in candidates:
        predicted = scores >= threshold
        j = predicted[labels].mean() - predicted[~labels].mean()
        if j > best_j:
            best, best_j = float(threshold), j
    return best


def pointing_game(heatmaps: np.ndarray, boxes: np.ndarray) -> float:
    """Share of maps whose peak falls inside their box. ``heatmaps`` [N, H, W]; ``boxes`` [N, 4] (x0, y0, x1, y1)
    in the same pixel grid, x1/y1 exclusive."""
    if len(heatmaps) == 0:
        return float("nan")
    hits = 0
    for heat, (x0, y0, x1, y1) in zip(heatmaps, boxes):
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hits += x0 <= x < x1 and y0 <= y < y1
    return hits / len(heatmaps)

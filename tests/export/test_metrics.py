"""Ranking metrics, threshold choice and the pointing game, against hand computations and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from auditor_rt.export.training.metrics import auroc, average_precision, choose_threshold, pointing_game


def brute_force_auroc(scores, labels) -> float:
    """P(score of a positive > score of a negative), ties counting one half."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def brute_force_ap(scores, labels) -> float:
    """sklearn's step-wise AP: sum over distinct thresholds of (recall gain) x precision."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= threshold
        tp = (predicted & labels).sum()
        recall = tp / labels.sum()
        ap += (recall - previous_recall) * tp / predicted.sum()
        previous_recall = recall
    return float(ap)


# --- auroc -----------------------------------------------------------------------------------------------------

def test_auroc_known_value():
    # the classic sklearn docs example: 3 of 4 pairs ordered correctly
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


@pytest.mark.parametrize("scores, labels, expected", [
    ([0.2, 0.8], [0, 1], 1.0),
    ([0.8, 0.2], [0, 1], 0.0),
    ([0.5, 0.5], [0, 1], 0.5),                       # a tie is worth one half
    ([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1], 0.75),      # pos 0.5 ties both negs (0.5+0.5), pos 0.9 wins both (2)
    ([0.1, 0.3, 0.3, 0.7], [1, 1, 0, 0], 0.125),    # only pos 0.3 vs neg 0.3 scores (a half) of 4 pairs
])
def test_auroc_hand_computed_with_ties(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_matches_brute_force_on_random_tied_scores():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, size=30) / 4.0  # many ties
        labels = rng.integers(0, 2, size=30)
        if labels.all() or not labels.any():
            continue
        assert auroc(scores, labels) == pytest.approx(brute_force_auroc(scores, labels))


def test_auroc_does_not_depend_on_input_order():
    rng = np.random.default_rng(1)
    scores, labels = rng.integers(0, 4, size=25).astype(float), rng.integers(0, 2, size=25)
    perm = rng.permutation(25)
    assert auroc(scores, labels) == pytest.approx(auroc(scores[perm], labels[perm]))


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_auroc_one_class_is_nan(labels):
    assert math.isnan(auroc([0.1, 0.5, 0.9], labels))


# --- average precision -----------------------------------------------------------------------------------------

def test_average_precision_known_value():
    # sklearn docs example: precision 1 at recall 0.5, precision 2/3 at recall 1
    assert average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_average_precision_perfect_and_worst():
    assert average_precision([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == pytest.approx(1.0)
    # positives ranked last: precision 1/3 at the first, 2/4 at the second
    assert average_precision([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 4)


def test_average_precision_ties_form_one_threshold():
    # All tied: a single threshold with precision 0.5 at recall 1. Treating the tie in listed order would give
    # (1 + 2/3) / 2 = 0.833, which depends on how the input happened to be sorted.
    assert average_precision([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == pytest.approx(0.5)
    # 0.9 is a hit (P=1, R=0.5); the 0.8 tie holds one hit and one miss (P=2/3, R=1)
    assert average_precision([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([0.9, 0.8, 0.8, 0.1], [1, 1, 0, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_average_precision_matches_brute_force_on_random_tied_scores():
    rng = np.random.default_rng(2)
    for _ in range(20):
        scores = rng.integers(0, 6, size=40) / 5.0
        labels = rng.integers(0, 2, size=40)
        if not labels.any():
            continue
        assert average_precision(scores, labels) == pytest.approx(brute_force_ap(scores, labels))


def test_average_precision_without_positives_is_nan():
    assert math.isnan(average_precision([0.3, 0.7], [0, 0]))


# --- threshold -------------------------------------------------------------------------------------------------

def test_choose_threshold_separable_scores():
    threshold = choose_threshold([0.1, 0.2, 0.6, 0.7], [0, 0, 1, 1])
    assert threshold == pytest.approx(0.6)  # lowest score that still keeps every negative below it


def test_choose_threshold_maximises_youden_j():
    scores = np.array([0.1, 0.3, 0.35, 0.4, 0.5, 0.8, 0.9])
    labels = np.array([0, 0, 1, 0, 1, 1, 0])
    threshold = choose_threshold(scores, labels)

    def youden(t):
        predicted = scores >= t
        return predicted[labels == 1].mean() - predicted[labels == 0].mean()

    best = max(youden(t) for t in np.unique(scores))
    assert threshold in scores
    assert youden(threshold) == pytest.approx(best)
    assert threshold == pytest.approx(0.35)  # J = 3/3 - 2/4 = 0.5; at 0.5 it is 2/3 - 1/4


@pytest.mark.parametrize("scores, labels", [
    ([0.2, 0.9], [1, 1]),          # one class only
    ([0.2, 0.9], [0, 0]),
    ([0.4, 0.4, 0.4], [0, 1, 0]),  # a single distinct score
])
def test_choose_threshold_falls_back_to_one_half(scores, labels):
    assert choose_threshold(scores, labels) == 0.5


# --- pointing game ---------------------------------------------------------------------------------------------

def _peak_map(h, w, y, x):
    heat = np.zeros((h, w), np.float32)
    heat[y, x] = 1.0
    return heat


def test_pointing_game_hits_and_misses_with_exclusive_edges():
    heatmaps = np.stack([_peak_map(6, 8, 2, 3)] * 4)
    boxes = np.array([
        [3, 2, 4, 3],  # the single pixel (x=3, y=2): hit
        [0, 0, 3, 6],  # x1 = 3 is exclusive: miss
        [0, 0, 8, 2],  # y1 = 2 is exclusive: miss
        [0, 0, 8, 6],  # whole map: hit
    ])
    assert pointing_game(heatmaps, boxes) == pytest.approx(0.5)


def test_pointing_game_uses_x_for_columns_and_y_for_rows():
    heatmaps = _peak_map(10, 10, 1, 8)[None]  # row 1, column 8
    assert pointing_game(heatmaps, np.array([[7, 0, 10, 3]])) == 1.0
    assert pointing_game(heatmaps, np.array([[0, 7, 3, 10]])) == 0.0  # x and y swapped


def test_pointing_game_empty_is_nan():
    assert math.isnan(pointing_game(np.zeros((0, 4, 4)), np.zeros((0, 4))))

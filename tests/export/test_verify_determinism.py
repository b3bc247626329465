"""verify runs each graph twice on the same inputs: a spread between the runs above the input's noise floor is
non-determinism, and fails; below it, a note."""

from __future__ import annotations

import numpy as np

from auditor_rt.export.verification.compare import Comparison
from auditor_rt.export.verification.verify import judge_determinism

LABELS = ["photo", "random"]


def maps(rng, noise=0.0):
    base = rng.standard_normal((2, 8, 8))
    return base, base + noise * rng.standard_normal((2, 8, 8))


def test_identical_runs_record_no_spread():
    rng = np.random.default_rng(0)
    reference, _ = maps(rng)
    result = Comparison("onnxruntime", "saliency", "saliency", "map")
    judge_determinism(result, reference.astype(np.float32), reference.astype(np.float32), reference, reference, LABELS)
    assert result.passed and result.spread == 0 and not result.notes


def test_a_spread_above_the_noise_floor_fails_and_names_the_input():
    rng = np.random.default_rng(1)
    reference, torch32 = maps(rng, noise=1e-7)  # PyTorch FP32 within 1e-7 of FP64
    first = reference.astype(np.float32)
    second = first.copy()
    second[1, 3, 3] += 1e-3 * np.abs(reference[1]).max()  # two calls 1e-3 of the scale apart on "random"
    result = Comparison("onnxruntime", "saliency", "saliency", "map")
    judge_determinism(result, first, second, reference, torch32, LABELS)
    assert not result.passed and abs(result.spread - 1e-3) < 1e-5
    assert "non-deterministic" in result.reasons[0] and "random" in result.reasons[0]


def test_a_spread_within_the_floor_is_a_note():
    rng = np.random.default_rng(2)
    reference, torch32 = maps(rng, noise=1e-3)
    first = reference.astype(np.float32)
    second = first + np.float32(1e-6)
    result = Comparison("onnxruntime", "ig", "ig", "map")
    judge_determinism(result, first, second, reference, torch32, LABELS)
    assert result.passed and result.spread > 0 and "non-deterministic" in result.notes[0]


def test_class_indices_that_change_fail():
    result = Comparison("onnxruntime", "classify", "top_class", "index")
    judge_determinism(result, np.array([1, 2]), np.array([1, 3]), np.array([1, 2]), None, LABELS)
    assert not result.passed and "non-deterministic" in result.reasons[0]

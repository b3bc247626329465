"""The comparison behind ``verify``: error statistics, map agreement, input dependence and verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from auditor_rt.export.verification.compare import (Tolerance, compare_output, cosine_per_image, pairwise_spread,
                                        spearman_per_image, top_region_iou)

rng = np.random.default_rng(0)


def maps(n=4, size=16):
    return rng.standard_normal((n, size, size))


def test_identical_maps_pass_with_perfect_agreement():
    reference = maps()
    result = compare_output("ort", "g", "m", reference.astype(np.float32), reference, reference, Tolerance())
    assert result and result.kind == "map"
    assert result.cosine == pytest.approx(1.0) and result.spearman == pytest.approx(1.0) and result.iou == 1.0
    assert result.dependence == pytest.approx(1.0, abs=1e-6) and result.scaled_error < 1e-6


def test_spearman_and_cosine_see_a_reversed_map():
    reference = maps()
    assert np.allclose(spearman_per_image(-reference, reference), -1.0)
    assert np.allclose(cosine_per_image(-reference, reference), -1.0)


def test_spearman_ignores_noise_that_orders_exact_ties_of_the_reference():
    reference = np.repeat(np.arange(8.0), 32)[None]  # 8 groups of 32 exact ties
    noisy = reference + rng.standard_normal(reference.shape) * 1e-9
    assert spearman_per_image(noisy, reference)[0] == pytest.approx(1.0)
    assert spearman_per_image(noisy[:, ::-1], reference)[0] < 0  # a real disagreement still shows


def test_top_region_iou():
    reference = np.arange(100.0).reshape(1, 10, 10)
    assert top_region_iou(reference, reference)[0] == 1.0
    shifted = np.roll(reference.ravel(), 5).reshape(reference.shape)  # half of the top 10 cells move
    assert 0.2 < top_region_iou(shifted, reference)[0] < 0.8


def test_a_frozen_map_has_no_input_dependence_and_fails():
    reference = maps()
    frozen = np.repeat(reference[:1], len(reference), axis=0).astype(np.float32)
    assert pairwise_spread(frozen) == 0.0
    result = compare_output("ort", "saliency", "saliency", frozen, reference, reference, Tolerance())
    assert not result and result.dependence == 0.0
    assert any("input dependence" in reason and "frozen" in reason for reason in result.reasons)


def test_errors_are_judged_against_the_scale_and_the_noise_floor():
    reference = maps()
    small = reference + 1e-6 * np.abs(reference).max()
    assert compare_output("ort", "g", "m", small, reference, None, Tolerance())
    large = reference + 1e-3 * np.abs(reference).max()
    failed = compare_output("ort", "g", "m", large, reference, None, Tolerance())
    assert not failed and "error" in failed.reasons[0] and failed.min_atol == pytest.approx(failed.max_abs)
    noisy_torch = reference + 2e-3 * np.abs(reference).max()  # PyTorch FP32 is itself this far from FP64
    assert compare_output("ort", "g", "m", large, reference, noisy_torch, Tolerance())


def test_user_tolerances_are_elementwise_like_allclose():
    reference = np.ones((2, 4, 4))
    actual = reference + 0.01
    assert not compare_output("ort", "g", "heatmap", actual, reference, None, Tolerance(atol=1e-3))
    assert compare_output("ort", "g", "heatmap", actual, reference, None, Tolerance(atol=0.011))
    assert compare_output("ort", "g", "heatmap", actual, reference, None, Tolerance(rtol=0.02))


def test_nan_and_shape_and_index_outputs():
    reference = maps()
    broken = reference.copy()
    broken[0, 0, 0] = np.nan
    result = compare_output("ort", "g", "m", broken, reference, None, Tolerance())
    assert not result and result.nonfinite == 1
    assert not compare_output("ort", "g", "m", reference[:, :8], reference, None, Tolerance())
    classes = np.array([1, 2, 3])
    assert compare_output("ort", "g", "top_class", classes, classes, None, Tolerance())
    wrong = compare_output("ort", "g", "top_class", np.array([1, 2, 4]), classes, None, Tolerance())
    assert not wrong and wrong.reasons == ["1 of 3 values differ"]


def test_a_local_switch_passes_with_a_note_and_a_wrong_map_does_not():
    """A ReLU switched by rounding noise moves a map locally (cosine stays >= 0.9999): it passes, noted. An error
    spread over the map, or past 1e-2 of its scale, fails."""
    reference = np.abs(maps(2, 64))
    local = reference.copy()
    local[0, 3, 3] += 5e-3 * reference[0].max()
    result = compare_output("ort", "ig", "ig", local, reference, reference, Tolerance())
    assert result and result.notes and "ReLU" in result.notes[0]
    spread = reference * 1.02
    assert not compare_output("ort", "ig", "ig", spread, reference, reference, Tolerance())
    large = reference.copy()
    large[0, 3, 3] += 5e-2 * reference[0].max()
    assert not compare_output("ort", "ig", "ig", large, reference, reference, Tolerance())


def _with_ill_conditioned_white(n=5, size=16):
    """n - 1 ordinary inputs, and a last one ("white") whose FP32 reference points elsewhere: max-pool ties."""
    reference = maps(n, size)
    reference32 = reference + 1e-7 * maps(n, size)
    reference32[-1] = maps(1, size)[0]  # PyTorch FP32 against FP64 on the white image: another map altogether
    return reference, reference32, [f"real-{i}" for i in range(n - 1)] + ["white"]


def test_an_ill_conditioned_input_is_labelled_and_never_widens_another_inputs_tolerance():
    reference, reference32, labels = _with_ill_conditioned_white()
    actual = reference.copy()
    actual[0] += 0.2 * np.abs(reference[0]).max() * maps(1)[0]  # half wrong on an ordinary input
    result = compare_output("ort", "g", "m", actual, reference, reference32, Tolerance(), labels=labels)
    assert list(result.ill_conditioned) == ["white"] and "cosine" in result.ill_conditioned["white"]
    assert not result and any("on real-0" in reason for reason in result.reasons), result.reasons
    # The white input itself may miss FP64 as much as PyTorch FP32 does: judged on its own floor, it passes.
    actual = reference.copy()
    actual[-1] = reference32[-1]
    assert compare_output("ort", "g", "m", actual, reference, reference32, Tolerance(), labels=labels)


def test_a_reference_that_turns_under_the_jitter_is_ill_conditioned():
    reference = maps(3)
    jittered = reference.copy()
    jittered[1] = maps(1)[0]  # a tie sitting on the input: the jitter sends the map elsewhere
    result = compare_output("ort", "g", "m", reference, reference, reference, Tolerance(), jittered=jittered,
                            labels=["a", "b", "c"])
    assert list(result.ill_conditioned) == ["b"] and "jitter" in result.ill_conditioned["b"]


def test_a_local_move_under_the_jitter_raises_that_inputs_floor_only():
    reference = maps(3)
    scale = np.abs(reference).max(axis=(1, 2))
    jittered = reference.copy()
    jittered[1, 3, 3] += 2e-2 * scale[1]  # a ReLU switched at one path point: the map moves, it does not turn
    actual = reference.copy()
    actual[1, 5, 5] += 3e-2 * scale[1]  # within twice that input's own move: passes
    result = compare_output("ort", "g", "m", actual, reference, reference, Tolerance(), jittered=jittered)
    assert result and not result.ill_conditioned and result.floor == pytest.approx(2e-2, rel=1e-6)
    actual[0, 5, 5] += 3e-2 * scale[0]  # the same error on an input that does not move fails
    result = compare_output("ort", "g", "m", actual, reference, reference, Tolerance(), jittered=jittered)
    assert not result and any("on input 0" in reason for reason in result.reasons), result.reasons


def test_input_dependence_is_judged_on_well_conditioned_inputs_and_a_frozen_map_always_fails():
    reference, reference32, labels = _with_ill_conditioned_white()
    frozen = np.broadcast_to(reference[0], reference.shape).copy()
    result = compare_output("ort", "g", "m", frozen, reference, reference32, Tolerance(), labels=labels)
    assert result.dependence is not None and result.dependence < 0.5
    assert any("input dependence" in reason for reason in result.reasons), result.reasons
    # However noisy PyTorch FP32's own dependence is, the allowance stays below a frozen map's miss.
    noisy32 = reference + 0.05 * maps(len(reference))
    result = compare_output("ort", "g", "m", frozen, reference, noisy32, Tolerance(), labels=labels)
    assert any("input dependence" in reason for reason in result.reasons), result.reasons
    # With every input ill-conditioned nothing can tell a live map from a frozen one: that is no pass either.
    result = compare_output("ort", "g", "m", frozen, reference, maps(len(reference)), Tolerance(), labels=labels)
    assert not result and any("cannot be judged" in reason for reason in result.reasons), result.reasons


def test_max_rel_ignores_cells_where_the_reference_is_near_zero():
    reference = maps(2)
    reference[0, 0, 0] = 1e-12
    actual = reference + 1e-9
    result = compare_output("ort", "g", "m", actual, reference, reference, Tolerance())
    assert result.max_rel < 1e-3 and result.min_rtol > 1e2

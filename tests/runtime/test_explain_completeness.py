"""IG's completeness check, and what ``--explain`` says about a method the artifact lacks or that does not exist.
(That these methods are the exporter's is tested in tests/export/test_exported_explain.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from auditor_rt.runtime import Auditor
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.explain import KNOWN_METHODS, check_method, ig_completeness, steps_for_gap
from tiny.drawing import red_square


def test_completeness_recovers_the_logit_difference_from_the_sum_and_delta():
    raw = np.full((10, 10), 0.05, np.float32)  # sums to 5.0
    check = ig_completeness(raw, delta=0.4)    # so logit(image) - logit(baseline) = 4.6
    assert check["ig_logit_difference"] == pytest.approx(4.6, abs=1e-6)
    assert check["ig_gap"] == pytest.approx(0.4 / 4.6, abs=1e-4) and check["ig_converged"] is True
    off = ig_completeness(raw, delta=2.33)
    assert off["ig_converged"] is False and off["ig_gap"] == pytest.approx(2.33 / 2.67, abs=1e-4)
    assert ig_completeness(raw, delta=-0.6)["ig_converged"] is False  # 0.6 / 5.6: the sign does not matter
    assert ig_completeness(np.zeros((4, 4)), delta=0.005)["ig_converged"] is True  # under 0.01 logits


def test_suggested_steps_grow_with_the_gap():
    assert steps_for_gap(32, 0.1) == 33
    assert steps_for_gap(32, 1.0) == 102      # 32 * sqrt(10): the gap taken to shrink as 1/steps^2
    assert steps_for_gap(32, 0.673) == 84     # the demo image measured at 0.190 (64 steps), 0.028 (128)
    assert steps_for_gap(32, 3.4) > steps_for_gap(32, 1.0)


def fake_artifact(*methods):
    graphs = {"audit": SimpleNamespace(kind="audit"), **{m: SimpleNamespace(kind="attribution") for m in methods}}
    return SimpleNamespace(manifest=SimpleNamespace(graphs=graphs))


def test_a_method_that_does_not_exist_lists_the_methods_and_the_artifacts():
    with pytest.raises(ConfigError) as caught:
        check_method(fake_artifact("gradcam", "ig"), "banana")
    message = str(caught.value)
    assert "unknown attribution method 'banana'" in message and "re-export" not in message
    assert all(m in message for m in KNOWN_METHODS) and "this artifact has: gradcam, ig" in message


def test_a_method_the_artifact_lacks_suggests_re_exporting():
    with pytest.raises(ConfigError, match="re-export with --attribution smoothgrad") as caught:
        check_method(fake_artifact("gradcam"), "smoothgrad")
    assert "this artifact has: gradcam" in str(caught.value)
    check_method(fake_artifact("gradcam"), "gradcam")  # present: no error


def test_ig_logit_difference_matches_the_audit_graph_on_image_and_black_baseline(explain_artifact_dir):
    """The completeness figures are derived (sum of the raw map minus delta); check them against the audit graph
    run on the image and on the black baseline, which the IG graph of this artifact starts from. A red patch makes
    the tiny risk head's logit bend along the path, so 4 IG steps leave a gap to measure; random noise does not."""
    rng = np.random.default_rng(1)
    images = [red_square((80, 70), (0, 0, 20, 20), seed=1), red_square((80, 70), (10, 30, 60, 70), seed=2),
              rng.integers(0, 256, (80, 70, 3), dtype=np.uint8)]
    with Auditor.load(explain_artifact_dir) as auditor:
        explanations = auditor.explain_arrays(images, "ig")
        logits = [r.logit for r in auditor.audit_arrays(images)]
        black = auditor.audit_arrays([np.zeros((80, 70, 3), np.uint8)])[0].logit
        size = auditor.input_size
    gaps = []
    for explanation, logit in zip(explanations, logits):
        assert explanation.raw.shape == tuple(size)
        check = explanation.completeness
        assert check["ig_logit_difference"] == pytest.approx(logit - black, abs=2e-3)
        gap = abs(explanation.extras["delta"]) / abs(logit - black)
        assert check["ig_gap"] == pytest.approx(gap, rel=1e-2, abs=1e-4)  # ig_gap is rounded to 4 places
        assert explanation.to_dict()["ig_converged"] == check["ig_converged"] == (gap <= 0.1)
        gaps.append(gap)
    assert gaps[0] > 0.01 and gaps[2] < 1e-3

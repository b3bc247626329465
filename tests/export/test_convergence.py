"""IG's completeness gap at export: the formula, the eager reference at more steps, the suggested steps, and the
record and warning that an export of a coarse IG graph gets."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch

from auditor_rt.export.attribution import create_attribution
from auditor_rt.export.models.checkpoint import load_checkpoint
from auditor_rt.export.verification.convergence import (GAP_LIMIT, IGConvergenceWarning, check_completeness, completeness_gaps,
                                           reference_gap, suggested_steps)
from auditor_rt.export.graphs.artifact_writer import example_images
from auditor_rt.export.graphs.risk_head_export import build_audit_module
from auditor_rt.export.progress import Progress


@pytest.fixture(scope="module")
def audit(checkpoint_dir):
    return build_audit_module(load_checkpoint(checkpoint_dir))


def feed_of(audit, n: int = 3, seed: int = 5) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).integers(0, 256, (n, *audit.input_size, 3), dtype=np.uint8)}


def test_gap_is_delta_over_the_change_of_the_logit():
    ig = np.array([[[1.0, 2.0]], [[0.5, -0.5]]])  # sums 3.0 and 0.0
    delta = np.array([0.5, 0.25])
    # change of the logit = sum - delta: 2.5 and -0.25
    np.testing.assert_allclose(completeness_gaps(ig, delta), [0.5 / 2.5, 0.25 / 0.25])


def test_the_eager_reference_gap_equals_the_graph_modules_own(audit):
    """reference_gap recomputes IG in chunks with autograd; at the module's own steps it must give the module's
    delta (an independent route: the module runs the compiled backward graph, all points at once)."""
    module = create_attribution("ig", audit, example_images(audit.input_size), steps=6)
    feed = feed_of(audit)
    with torch.no_grad():
        out = module(torch.from_numpy(feed["image"]))
    gaps = completeness_gaps(out.ig.numpy(), out.delta.numpy())
    for index in range(3):
        assert reference_gap(module, feed, index, 6, chunk=4) == pytest.approx(gaps[index], rel=1e-3, abs=1e-5)


def test_suggested_steps_are_measured_when_twice_the_steps_suffice_else_extrapolated():
    assert suggested_steps(32, 0.3, 0.05) == (64, "measured: 64 steps give 5%")
    steps, how = suggested_steps(32, 0.4, 0.2)  # halves per doubling: order 1, so 0.2 -> 0.1 needs 2x more
    assert steps == 128 and how.startswith("extrapolated")
    assert suggested_steps(32, 0.15, 0.15)[0] == 144  # no progress seen: the slowest order (0.5): 64 x 1.5^2
    assert suggested_steps(32, 0.9, 0.9)[0] == 1024  # capped


def test_a_coarse_ig_graph_is_flagged_with_the_steps_it_needs(audit):
    module = create_attribution("ig", audit, example_images(audit.input_size), steps=2)
    feed = feed_of(audit)
    with torch.no_grad():
        out = module(torch.from_numpy(feed["image"]))
    actual = {"ig": out.ig.numpy(), "delta": out.delta.numpy()}
    gaps = completeness_gaps(actual["ig"], actual["delta"])
    assert np.median(gaps) > GAP_LIMIT, "the premise: 2 steps are too few on this model"
    stream = io.StringIO()
    record = check_completeness(module, actual, feed, Progress(["ig"], stream=stream))
    assert record["gap_median"] == pytest.approx(float(np.median(gaps)), abs=1e-4)
    assert record["steps"] == 2 and record["steps_needed"] > 2
    assert f"--ig-steps {record['steps_needed']}" in stream.getvalue()
    with pytest.warns(IGConvergenceWarning, match="completeness gap"):
        check_completeness(module, actual, feed, Progress.silent())


def test_a_converged_ig_graph_is_recorded_without_a_warning(audit):
    module = create_attribution("ig", audit, example_images(audit.input_size), steps=4)
    feed = feed_of(audit)
    actual = {"ig": np.ones((3, 2, 2)), "delta": np.array([0.01, 0.02, 0.0])}  # sums 4: gaps under 1%
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record = check_completeness(module, actual, feed, Progress.silent())
    assert record["gap_median"] < 0.01 and "steps_needed" not in record
    json.dumps(record)  # goes into the manifest as is


def test_the_exported_gradient_in_onnx_runtime_gives_the_same_gap(audit):
    from auditor_rt.export.attribution import splice
    from auditor_rt.export.verification.convergence import onnx_gradient

    module = create_attribution("ig", audit, example_images(audit.input_size), steps=4)
    ((_, graph),) = splice.spliceable(module)
    gradient = onnx_gradient(splice.export_gradient(graph, 18))
    feed = feed_of(audit, n=2)
    for index in range(2):
        ours = reference_gap(module, feed, index, 8, gradient=gradient)
        assert ours == pytest.approx(reference_gap(module, feed, index, 8), rel=1e-3, abs=1e-5)

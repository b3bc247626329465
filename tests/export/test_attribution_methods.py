"""Every attribution method, exported to ONNX and run in ONNX Runtime, against a plain-autograd reference on
inputs the export never saw; and every map changes when the input changes (no gradient frozen at export)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import auditor_rt.export.attribution.cam  # noqa: F401  (registers gradcam, gradcam++)
import auditor_rt.export.attribution.paths  # noqa: F401  (registers ig, smoothgrad)
from auditor_rt.export.attribution.methods import create_attribution
from auditor_rt.export.models.checkpoint import load_checkpoint
from auditor_rt.export.conversion.torch_to_onnx import export_graph
from auditor_rt.export.graphs.risk_head_export import build_audit_module

from autograd_reference import autograd_reference

CASES = {
    "saliency": ("saliency", {}),
    "ig-black": ("ig", {"steps": 6}),
    "ig-blur": ("ig", {"steps": 6, "baseline": "blur", "blur_sigma": 3.0}),
    "smoothgrad": ("smoothgrad", {"samples": 4}),
    "gradcam-last": ("gradcam", {}),
    "gradcam-stage1": ("gradcam", {"stage": 1}),
    "gradcam++": ("gradcam++", {}),
}


@pytest.fixture(scope="module")
def audit(checkpoint_dir):
    return build_audit_module(load_checkpoint(checkpoint_dir))


@pytest.fixture(scope="module")
def sessions(audit, tmp_path_factory):
    folder = tmp_path_factory.mktemp("attributions")
    example = torch.randint(0, 256, (2, *audit.input_size, 3), dtype=torch.uint8)
    built = {}
    for case, (method, params) in CASES.items():
        module = create_attribution(method, audit, example, **params)
        inputs = ("image", *module.extra_inputs)
        examples = (example, torch.randn(2, 3, 3, *audit.input_size)) if method == "smoothgrad" else example
        export_graph(module, folder / f"{case}.onnx", examples, input_names=inputs, dynamic={"noise": {1: "samples"}})
        built[case] = (module, ort.InferenceSession(str(folder / f"{case}.onnx"), providers=["CPUExecutionProvider"]))
    return built


def reference(case, module, audit, x, noise):
    return autograd_reference(CASES[case][0], module, audit, x, noise)


def run(session, feed) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def images(audit, seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *audit.input_size, 3), dtype=np.uint8)


@pytest.mark.parametrize("case", sorted(CASES))
def test_attribution_equals_autograd_on_new_inputs(case, sessions, audit):
    module, session = sessions[case]
    compared = 0
    for seed in (21, 22, 23, 24):
        batch = images(audit, seed)
        feed = {"image": batch}
        noise = None
        if "noise" in module.extra_inputs:
            noise = torch.randn(3, 5, 3, *audit.input_size, generator=torch.Generator().manual_seed(seed))
            feed["noise"] = noise.numpy()
        actual = run(session, feed)
        expected = reference(case, module, audit, audit.normalize(torch.from_numpy(batch)), noise)
        for name, value in expected.items():
            value = value.detach().numpy()
            scale = float(np.abs(value).max())
            if name == "delta":  # a small difference of large sums: judge it on the logits' scale
                scale = max(scale, float(np.abs(expected["logit"].numpy()).max()))
            error = float(np.abs(actual[name] - value).max())
            assert error <= 1e-4 * max(scale, 1e-6), f"{case}/{name}: max error {error:.2e}, scale {scale:.2e}"
            if value.ndim > 1 and np.linalg.norm(value) > 0:  # a CAM can be all zero (ReLU); then error decides
                cosine = float(actual[name].ravel() @ value.ravel() / (np.linalg.norm(actual[name]) * np.linalg.norm(value) + 1e-30))
                assert cosine >= 0.9999, f"{case}/{name}: cosine {cosine}"
                compared += 1
    assert compared > 0, f"{case}: every reference map was zero, so nothing was compared"


@pytest.mark.parametrize("case", sorted(CASES))
def test_attribution_depends_on_the_input(case, sessions, audit):
    module, session = sessions[case]
    maps = []
    for seed in (31, 32):
        feed = {"image": images(audit, seed, n=2)}
        if "noise" in module.extra_inputs:
            feed["noise"] = np.random.default_rng(0).standard_normal((2, 3, 3, *audit.input_size)).astype(np.float32)
        out = run(session, feed)
        maps.append(out[[o.name for o in session.get_outputs()][1]])
    first, second = maps
    assert np.abs(first - second).max() > 1e-3 * np.abs(first).max()
    assert np.abs(first[0] - first[1]).max() > 1e-3 * np.abs(first).max()


def test_integrated_gradients_converge_with_more_steps(audit):
    example = torch.randint(0, 256, (2, *audit.input_size, 3), dtype=torch.uint8)
    batch = torch.from_numpy(images(audit, 41, n=2))
    deltas = []
    for steps in (2, 16):
        with torch.no_grad():
            deltas.append(create_attribution("ig", audit, example, steps=steps)(batch).delta.abs().max().item())
    assert deltas[1] <= deltas[0] + 1e-6

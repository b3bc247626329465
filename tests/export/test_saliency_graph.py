"""The exported input-gradient graph equals PyTorch autograd on inputs it never saw, and depends on its input."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from auditor_rt.export.attribution.saliency import SaliencyModule
from auditor_rt.export.checkpoint import load_checkpoint
from auditor_rt.export.onnx_export import build_audit_module, export_graph


@pytest.fixture(scope="module")
def saliency_graph(checkpoint_dir, tmp_path_factory):
    audit = build_audit_module(load_checkpoint(checkpoint_dir))
    example = torch.randint(0, 256, (2, *audit.input_size, 3), dtype=torch.uint8)
    path = tmp_path_factory.mktemp("saliency") / "saliency.onnx"
    export_graph(SaliencyModule(audit, example).eval(), path, example)
    return audit, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def autograd_reference(audit, images: np.ndarray):
    x = audit.normalize(torch.from_numpy(images)).detach().requires_grad_(True)
    logit = audit.head(audit.features(x)).logit
    grad, = torch.autograd.grad(logit.sum(), x)
    return grad.numpy(), x.detach().numpy(), logit.detach().numpy()


def test_saliency_graph_equals_autograd(saliency_graph):
    audit, session = saliency_graph
    names = [o.name for o in session.get_outputs()]
    assert names == ["logit", "input_grad", "saliency", "grad_x_input"]
    for seed in (11, 12):
        images = np.random.default_rng(seed).integers(0, 256, (3, *audit.input_size, 3), dtype=np.uint8)
        out = dict(zip(names, session.run(None, {"image": images})))
        grad, x, logit = autograd_reference(audit, images)
        scale = np.abs(grad).max()
        assert np.abs(out["input_grad"] - grad).max() <= 1e-4 * scale
        cosine = float(out["input_grad"].ravel() @ grad.ravel() / np.linalg.norm(out["input_grad"]) / np.linalg.norm(grad))
        assert cosine >= 0.9999
        assert np.abs(out["logit"] - logit).max() <= 1e-4
        np.testing.assert_allclose(out["saliency"], np.abs(grad).max(axis=1), atol=1e-4 * scale)
        np.testing.assert_allclose(out["grad_x_input"], (grad * x).sum(axis=1), atol=1e-3 * np.abs(grad * x).max())


def test_saliency_is_not_frozen(saliency_graph):
    audit, session = saliency_graph
    rng = np.random.default_rng(5)
    first = session.run(["input_grad"], {"image": rng.integers(0, 256, (2, *audit.input_size, 3), dtype=np.uint8)})[0]
    second = session.run(["input_grad"], {"image": rng.integers(0, 256, (2, *audit.input_size, 3), dtype=np.uint8)})[0]
    assert np.abs(first - second).max() > 1e-3 * np.abs(first).max()
    assert np.abs(first[0] - first[1]).max() > 1e-3 * np.abs(first).max()

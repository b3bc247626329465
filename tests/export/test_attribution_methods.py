"""Every attribution method, exported to ONNX and run in ONNX Runtime, against a plain-autograd reference on
inputs the export never saw; and every map changes when the input changes (no gradient frozen at export)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import auditor_rt.export.attribution.cam  # noqa: F401  (registers gradcam, gradcam++)
import auditor_rt.export.attribution.paths  # noqa: F401  (registers ig, smoothgrad)
from auditor_rt.export.attribution.methods import create_attribution
from auditor_rt.export.checkpoint import load_checkpoint
from auditor_rt.export.onnx_export import build_audit_module, export_graph

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


def run(session, feed) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def images(audit, seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *audit.input_size, 3), dtype=np.uint8)


def input_grad(audit, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    logit = audit.head(audit.features(x)).logit
    grad, = torch.autograd.grad(logit.sum(), x)
    return grad, logit.detach()


def stage_grad(audit, x: torch.Tensor, stage_name: str):
    captured = {}

    def hook(module, inputs, output):
        output.retain_grad()
        captured["activation"] = output

    handle = audit.features.model.get_submodule(stage_name).register_forward_hook(hook)
    try:
        audit.head(audit.features(x.detach().requires_grad_(True))).logit.sum().backward()
    finally:
        handle.remove()
    return captured["activation"].detach(), captured["activation"].grad


def reference(case: str, module, audit, x: torch.Tensor, noise: torch.Tensor | None) -> dict[str, torch.Tensor]:
    method = CASES[case][0]
    if method == "saliency":
        grad, logit = input_grad(audit, x)
        return {"logit": logit, "saliency": grad.abs().amax(1), "gradient": grad.sum(1)}
    if method == "ig":
        if module.baseline == "blur":
            from auditor_rt.export.attribution.paths import gaussian_blur

            base = gaussian_blur(x, module.blur_sigma)
        else:
            base = audit.normalize(torch.zeros(1, 1, 1, 3, dtype=torch.uint8)).expand_as(x)
        nodes, weights = np.polynomial.legendre.leggauss(module.steps)
        total = torch.zeros_like(x)
        for node, weight in zip(nodes, weights):
            grad, _ = input_grad(audit, base + (node + 1) / 2 * (x - base))
            total += weight / 2 * grad
        attribution = total * (x - base)
        _, logit = input_grad(audit, x)
        _, logit_base = input_grad(audit, base)
        return {"logit": logit, "ig": attribution.sum(1), "delta": attribution.sum((1, 2, 3)) - (logit - logit_base)}
    if method == "smoothgrad":
        spread = (x.amax((1, 2, 3)) - x.amin((1, 2, 3))).view(-1, 1, 1, 1)
        grads = [input_grad(audit, x + module.noise_level * spread * noise[:, s])[0].abs() for s in range(noise.shape[1])]
        return {"logit": input_grad(audit, x)[1], "smoothgrad": torch.stack(grads).mean(0).amax(1)}
    activation, grad = stage_grad(audit, x, module.stage)
    if method == "gradcam":
        weights = grad.mean((2, 3), keepdim=True)
    else:
        squared, cubed = grad.pow(2), grad.pow(3)
        alpha = squared / (2 * squared + activation.sum((2, 3), keepdim=True) * cubed)
        alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * F.relu(grad)).sum((2, 3), keepdim=True)
    return {"cam_raw": F.relu((weights * activation).sum(1))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attribution_equals_autograd_on_new_inputs(case, sessions, audit):
    module, session = sessions[case]
    for seed in (21, 22):
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
            if value.ndim > 1:
                cosine = float(actual[name].ravel() @ value.ravel() / (np.linalg.norm(actual[name]) * np.linalg.norm(value) + 1e-30))
                assert cosine >= 0.9999, f"{case}/{name}: cosine {cosine}"


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

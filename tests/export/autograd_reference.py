"""Plain-autograd references for the attribution methods: what every exported graph must equal."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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


def autograd_reference(method: str, module, audit, x: torch.Tensor, noise: torch.Tensor | None) -> dict:
    """What each exported attribution graph must equal, computed with plain torch.autograd."""
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
    if activation.dim() == 3:  # ViT tokens [N, T, C]: the patch tokens as a [N, C, side, side] grid
        side = int((activation.shape[1] - audit.features.num_prefix_tokens) ** 0.5)
        activation, grad = (t[:, -side * side:].permute(0, 2, 1).unflatten(2, (side, side)) for t in (activation, grad))
    if method == "gradcam":
        weights = grad.mean((2, 3), keepdim=True)
    else:
        squared, cubed = grad.pow(2), grad.pow(3)
        alpha = squared / (2 * squared + activation.sum((2, 3), keepdim=True) * cubed)
        alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * F.relu(grad)).sum((2, 3), keepdim=True)
    return {"cam_raw": F.relu((weights * activation).sum(1))}

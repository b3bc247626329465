"""Input-gradient attribution graphs for the risk model: saliency and gradient x input, with the gradient of the
risk logit computed inside the exported graph (it stays a function of the input, never a constant)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from auditor_rt.export.attribution.compiler import compile_gradient
from auditor_rt.export.graphs import AuditModule


class SaliencyOutputs(NamedTuple):
    logit: torch.Tensor         # [N]
    input_grad: torch.Tensor    # [N, 3, H, W]  d logit / d normalised input
    saliency: torch.Tensor      # [N, H, W]     max over channels of |gradient|
    grad_x_input: torch.Tensor  # [N, H, W]     sum over channels of gradient * input (signed)


def logit_gradient_fn(audit: AuditModule):
    """x (normalised, NCHW float) -> (d sum(logit)/dx, logit). Samples are independent in eval mode, so the
    gradient of the sum is each sample's own gradient."""
    def objective(x):
        logit = audit.head(audit.features(x)).logit
        return logit.sum(), logit

    def gradient(x):
        grad, logit = torch.func.grad(objective, has_aux=True)(x)
        return grad, logit

    return gradient


class SaliencyModule(nn.Module):
    """uint8 NHWC images -> SaliencyOutputs, the backward pass compiled to forward ops at construction."""

    def __init__(self, audit: AuditModule, example: torch.Tensor):
        super().__init__()
        self.normalize = audit.normalize
        with torch.no_grad():
            x = self.normalize(example)
        self.gradient = compile_gradient(logit_gradient_fn(audit), x)

    def forward(self, image: torch.Tensor) -> SaliencyOutputs:
        x = self.normalize(image)
        grad, logit = self.gradient(x)
        return SaliencyOutputs(logit, grad, grad.abs().amax(dim=1), (grad * x).sum(dim=1))

"""Attributions that average gradients over many inputs, run as one batch inside the graph: integrated gradients
along a path from a baseline, and SmoothGrad over noisy copies (the noise is an input, so runs repeat exactly)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from auditor_rt.export.attribution.methods import Attribution, register_attribution
from auditor_rt.runtime.errors import ConfigError

BASELINES = ("black", "blur", "input")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A real separable Gaussian blur (depthwise convolutions, reflect padding) of an NCHW tensor."""
    radius = max(1, int(round(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = torch.tensor(taps / taps.sum(), dtype=x.dtype)
    channels = x.shape[1]
    horizontal = taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), horizontal, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), vertical, groups=channels)


def repeat_each(target: torch.Tensor, times) -> torch.Tensor:
    """[t0, t1] -> [t0]*times + [t1]*times, as expand + reshape: repeat_interleave with a dynamic count exports to
    ONNX with a wrong shape."""
    return target[:, None].expand(target.shape[0], times).reshape(-1)


class IntegratedGradientsOutputs(NamedTuple):
    logit: torch.Tensor  # [N] at the image
    ig: torch.Tensor     # [N, H, W] signed, summed over channels
    delta: torch.Tensor  # [N] completeness error: sum(attribution) - (logit(image) - logit(baseline))


@register_attribution("ig")
class IntegratedGradients(Attribution):
    """Gauss-Legendre quadrature of the gradient along the straight path baseline -> image (Captum's default rule).
    The path points, plus both end points for the delta, run as one batch of N * (steps + 2)."""

    signed = True
    map_output = "ig"

    def __init__(self, audit, example, steps: int = 32, baseline: str = "black", blur_sigma: float = 8.0,
                 eager: bool = False, target: str = "onnxruntime"):
        if baseline not in BASELINES:
            raise ConfigError(f"unknown IG baseline {baseline!r}; choose from {', '.join(BASELINES)}")
        if steps < 1:
            raise ConfigError(f"--ig-steps must be at least 1, got {steps}")
        self.extra_inputs = ("baseline",) if baseline == "input" else ()
        super().__init__(audit, example, eager, target)
        self.steps, self.baseline, self.blur_sigma = steps, baseline, blur_sigma
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas = np.concatenate([(nodes + 1) / 2, [1.0, 0.0]])  # quadrature points, then image and baseline
        self.register_buffer("alphas", torch.tensor(alphas, dtype=torch.float32))
        self.register_buffer("weights", torch.tensor(weights / 2, dtype=torch.float32))
        self.register_buffer("black", self.normalize(torch.zeros(1, 1, 1, 3, dtype=torch.uint8)))

    def params(self) -> dict:
        return {"steps": self.steps, "baseline": self.baseline, "blur_sigma": self.blur_sigma,
                "rule": "gauss-legendre"}

    def reference(self, x, baseline):
        if self.baseline == "input":
            if baseline is None:
                raise ConfigError("this IG graph takes a 'baseline' image input")
            return self.normalize(baseline)
        if self.baseline == "blur":
            return gaussian_blur(x, self.blur_sigma)
        return self.black.expand_as(x)

    def explain(self, x, target=None, noise=None, baseline=None):
        n, points = x.shape[0], self.alphas.shape[0]
        reference = self.reference(x, baseline)
        difference = x - reference
        path = reference[:, None] + self.alphas.view(1, -1, 1, 1, 1) * difference[:, None]
        path_target = None if target is None else repeat_each(target, points)
        grads, logits = self.gradient(path.reshape(n * points, *x.shape[1:]), path_target)
        grads = grads.reshape(n, points, *x.shape[1:])[:, : self.steps]
        logits = logits.reshape(n, points)
        attribution = (grads * self.weights.view(1, -1, 1, 1, 1)).sum(dim=1) * difference
        ig = attribution.sum(dim=1)
        # Row sums, then their sum: ONNX Runtime's one-pass ReduceSum over all 150k values of a 224x224x3 map
        # accumulated an error of 5% of the total in FP32 (an all-white image, found by verify); PyTorch sums
        # pairwise.
        delta = ig.sum(dim=2).sum(dim=1) - (logits[:, -2] - logits[:, -1])
        return IntegratedGradientsOutputs(logits[:, -2], ig, delta)


class SmoothGradOutputs(NamedTuple):
    logit: torch.Tensor       # [N] at the image (no noise)
    smoothgrad: torch.Tensor  # [N, H, W] max over channels of the mean |gradient| over noisy copies


@register_attribution("smoothgrad")
class SmoothGrad(Attribution):
    """Mean |gradient| over ``samples`` noisy copies. The graph takes ``noise`` [N, samples, 3, H, W] of unit
    normal values, scaled by ``noise_level`` x (max - min) of each normalised image (Smilkov et al.)."""

    extra_inputs = ("noise",)
    map_output = "smoothgrad"

    def __init__(self, audit, example, samples: int = 16, noise_level: float = 0.15, eager: bool = False,
                 target: str = "onnxruntime"):
        super().__init__(audit, example, eager, target)
        self.samples, self.noise_level = samples, noise_level

    def params(self) -> dict:
        return {"samples": self.samples, "noise_level": self.noise_level, "noise": "unit normal, an input"}

    def explain(self, x, target=None, noise=None, baseline=None):
        if noise is None:
            raise ConfigError("this SmoothGrad graph takes a 'noise' input")
        n = x.shape[0]
        spread = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(n, 1, 1, 1, 1)
        noisy = torch.cat([x[:, None], x[:, None] + self.noise_level * spread * noise], dim=1)
        noisy_target = None if target is None else repeat_each(target, noisy.shape[1])
        grads, logits = self.gradient(noisy.reshape(-1, *x.shape[1:]), noisy_target)
        grads = grads.reshape(n, -1, *x.shape[1:])[:, 1:]
        return SmoothGradOutputs(logits.reshape(n, -1)[:, 0], grads.abs().mean(dim=1).amax(dim=1))

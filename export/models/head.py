"""The risk head: a 1x1 conv gives a signed risk map, pooling gives one number, a small MLP gives the logit."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from auditor_rt.runtime.errors import ConfigError

POOLINGS = ("avg", "topk")


class HeadOutput(NamedTuple):
    logit: torch.Tensor     # [N]
    risk_map: torch.Tensor  # [N, h, w], positive = evidence for risk
    pooled: torch.Tensor    # [N]


def topk_mean(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the top ``fraction`` of cells of each [h, w] map (at least one cell).

    Written as a weighted sum whose weights split the last places evenly among the cells tied at the k-th value:
    the same value as ``topk(k).values.mean()``, but a gradient that does not depend on which of the tied cells a
    top-k kernel happens to pick. A uniform image gives a symmetric risk map with dozens of exact ties; PyTorch
    and ONNX Runtime break them differently, and the attribution maps would then differ by 100% (found by
    ``verify`` on all-white and all-black images)."""
    flat = maps.flatten(1)
    k = max(1, int(round(fraction * flat.shape[1])))
    with torch.no_grad():
        kth = flat.topk(k, dim=1).values[:, -1:]
        above = (flat > kth).to(flat.dtype)
        tied = (flat == kth).to(flat.dtype)
        share = (k - above.sum(dim=1, keepdim=True)) / tied.sum(dim=1, keepdim=True)
        weights = (above + tied * share) / k
    return (flat * weights).sum(dim=1)


class RiskHead(nn.Module):
    def __init__(self, channels: int, pooling: str = "topk", topk_fraction: float = 0.1, hidden: int = 16):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not 0.0 < topk_fraction <= 1.0:
            raise ConfigError(f"topk_fraction must be in (0, 1], got {topk_fraction}")
        self.pooling, self.topk_fraction, self.hidden = pooling, topk_fraction, hidden
        # Per-channel feature statistics from the training set: frozen features can have any scale.
        self.register_buffer("feature_mean", torch.zeros(channels))
        self.register_buffer("feature_std", torch.ones(channels))
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def config(self) -> dict:
        return {"channels": self.conv.in_channels, "pooling": self.pooling, "topk_fraction": self.topk_fraction,
                "hidden": self.hidden}

    @torch.no_grad()
    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise channels with statistics of [N, C, h, w] training features."""
        flat = features.float().transpose(0, 1).flatten(1)
        self.feature_mean.copy_(flat.mean(dim=1))
        std = flat.std(dim=1)
        # Near-constant channels carry no signal; dividing by their tiny std would only amplify float noise.
        self.feature_std.copy_(std.clamp_min(0.01 * float(std.mean()) + 1e-6))

    def forward(self, features: torch.Tensor) -> HeadOutput:
        scale = self.feature_std.view(1, -1, 1, 1)
        risk_map = self.conv((features.float() - self.feature_mean.view(1, -1, 1, 1)) / scale)[:, 0]
        pooled = risk_map.flatten(1).mean(dim=1) if self.pooling == "avg" else topk_mean(risk_map, self.topk_fraction)
        logit = self.mlp(pooled[:, None])[:, 0]
        return HeadOutput(logit, risk_map, pooled)

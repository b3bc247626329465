"""The three training losses. Each returns a scalar that keeps the graph even when a batch has no pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from auditor_rt.export.models.head import topk_mean


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def pairwise_ranking_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean over every (positive, negative) pair of log(1 + exp(-(s_pos - s_neg)))."""
    positives, negatives = logits[labels > 0.5], logits[labels <= 0.5]
    if positives.numel() == 0 or negatives.numel() == 0:
        return logits.sum() * 0.0
    return F.softplus(-(positives[:, None] - negatives[None, :])).mean()


def patch_topk_loss(risk_maps: torch.Tensor, labels: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Push the top-k cells of positives' risk maps up and of negatives' down (multiple-instance style)."""
    return F.binary_cross_entropy_with_logits(topk_mean(risk_maps, fraction), labels.float())


@dataclass(frozen=True)
class LossWeights:
    bce: float = 1.0
    pair: float = 0.5
    patch: float = 0.5


def risk_loss(logits, risk_maps, labels, weights: LossWeights, topk_fraction: float = 0.1):
    """Weighted sum and its parts: ``(total, {"bce": ..., "pair": ..., "patch": ...})``."""
    parts = {
        "bce": bce_loss(logits, labels),
        "pair": pairwise_ranking_loss(logits, labels),
        "patch": patch_topk_loss(risk_maps, labels, topk_fraction),
    }
    total = weights.bce * parts["bce"] + weights.pair * parts["pair"] + weights.patch * parts["patch"]
    return total, parts

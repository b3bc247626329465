"""The torch modules that become ONNX graphs. Their outputs are NamedTuples whose fields name the ONNX outputs."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from auditor_rt.export.models.backbone import FeatureExtractor, Normalize
from auditor_rt.export.models.head import RiskHead


class AuditOutputs(NamedTuple):
    logit: torch.Tensor     # [N]
    score: torch.Tensor     # [N] sigmoid(logit)
    risk_map: torch.Tensor  # [N, h, w] signed
    heatmap: torch.Tensor   # [N, H, W] in [0, 1] per image


class ScoreOutputs(NamedTuple):
    logit: torch.Tensor
    score: torch.Tensor


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max of [N, H, W] maps to [0, 1], per image."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)


def normalized_heatmap(risk_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of [N, h, w] maps to the input size, then min-max to [0, 1] per image."""
    return normalize_per_image(F.interpolate(risk_map[:, None], size=size, mode="bilinear", align_corners=False)[:, 0])


class AuditModule(nn.Module):
    """uint8 NHWC RGB images -> logit, score, risk map, heatmap: preprocessing and postprocessing included."""

    def __init__(self, normalize: Normalize, features: FeatureExtractor, head: RiskHead, input_size: tuple[int, int]):
        super().__init__()
        self.normalize, self.features, self.head = normalize, features, head
        self.input_size = tuple(input_size)

    takes_target = False

    def score(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """What attribution differentiates: the risk logit of normalised NCHW input (there is no class target)."""
        return self.head(self.features(x)).logit

    def forward(self, image: torch.Tensor) -> AuditOutputs:
        out = self.head(self.features(self.normalize(image)))
        return AuditOutputs(out.logit, torch.sigmoid(out.logit), out.risk_map,
                            normalized_heatmap(out.risk_map, self.input_size))


class ScoreModule(AuditModule):
    """Logits and scores only: the baseline that prices the heatmap outputs."""

    def forward(self, image: torch.Tensor) -> ScoreOutputs:
        logit = self.head(self.features(self.normalize(image))).logit
        return ScoreOutputs(logit, torch.sigmoid(logit))

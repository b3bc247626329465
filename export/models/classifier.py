"""A plain timm classifier with its own head, as the model being audited: the class to explain is an input."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from auditor_rt.export.models.backbone import (AUTO, RANDOM, FeatureExtractor, Normalize, RandomFeaturesWarning,
                                              WeightsInfo, hf_cache_file, load_weights_file)
from auditor_rt.runtime.errors import ConfigError


class ClassifyOutputs(NamedTuple):
    logits: torch.Tensor   # [N, K]
    probs: torch.Tensor    # [N, K] softmax
    top_class: torch.Tensor  # [N] int64


def resolve_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A target of -1 means the predicted class."""
    return torch.where(target < 0, logits.argmax(dim=1), target)


class ClassifierModule(nn.Module):
    """uint8 NHWC images -> logits, probabilities and the top class. ``score(x, target)`` is the logit of the class
    to explain, which is what every attribution method differentiates."""

    takes_target = True

    def __init__(self, normalize: Normalize, model: nn.Module, input_size: tuple[int, int]):
        super().__init__()
        self.normalize = normalize
        self.features = FeatureExtractor(model, input_size)  # .model is the whole classifier; stages for Grad-CAM
        self.input_size = tuple(input_size)
        self.num_classes = int(model.num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.features.model(x)

    def score(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # A one-hot mask rather than gather + select: its gradient is a plain product, where select's backward
        # leaves an as_strided scatter that ONNX cannot express.
        logits = self.logits(x)
        mask = torch.nn.functional.one_hot(resolve_target(logits, target), logits.shape[1]).to(logits.dtype)
        return (logits * mask).sum(dim=1)

    def forward(self, image: torch.Tensor) -> ClassifyOutputs:
        logits = self.logits(self.normalize(image))
        return ClassifyOutputs(logits, logits.softmax(dim=1), logits.argmax(dim=1))


def create_classifier(name: str, weights: str = AUTO, num_classes: int | None = None):
    """A timm classifier with its head, and where its weights came from (a file, the HF cache, or random)."""
    import timm

    options = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = timm.create_model(name, pretrained=False, **options)
    except RuntimeError as exc:
        raise ConfigError(f"unknown timm model {name!r} ({exc}); see `timm.list_models()`") from None
    cached = hf_cache_file(model) if weights == AUTO else None
    if weights not in (AUTO, RANDOM):
        info = load_weights_file(model, Path(weights), require_head=True)
    elif cached is not None:
        info = load_weights_file(model, cached, require_head=True)
    else:
        info = WeightsInfo(RANDOM, None)
        warnings.warn(f"classifier {name!r} has RANDOM weights: its classes and maps mean nothing; pass --weights "
                      "PATH to audit a real model.", RandomFeaturesWarning, stacklevel=2)
    return model.eval().requires_grad_(False), info

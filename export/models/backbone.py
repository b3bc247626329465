"""Frozen timm backbones: creation, weight loading from a local file or the Hugging Face cache, preprocessing."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from auditor_rt.runtime.artifact import sha256_file
from auditor_rt.runtime.errors import ConfigError

RANDOM = "random"
AUTO = "auto"


@dataclass(frozen=True)
class WeightsInfo:
    """Where the backbone's weights came from: ``source`` is a file path (given, or found in the HF cache) or
    ``random``."""

    source: str
    sha256: str | None

    @property
    def is_random(self) -> bool:
        return self.source == RANDOM


class RandomFeaturesWarning(UserWarning):
    """The backbone has random weights: maps and scores mean little until real weights are loaded."""


class Normalize(nn.Module):
    """uint8 NHWC RGB -> float NCHW, scaled and mean/std-normalised; lives inside the exported graph."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)))
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
                             / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # float before the transpose: TensorRT refuses a UINT8 tensor inside the network (inputs and outputs only)
        return image.float().permute(0, 3, 1, 2) * self.scale - self.shift


class FeatureExtractor(nn.Module):
    """The backbone's last feature map as [N, C, h, w]; ViT-style token outputs are reshaped to their grid."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int]):
        super().__init__()
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        try:
            with torch.no_grad():
                probe = self.forward(torch.zeros(1, 3, *input_size))
        except (AssertionError, RuntimeError, ValueError) as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"the backbone cannot take {input_size[0]}x{input_size[1]} inputs ({detail}); "
                              "choose another --input-size (e.g. a multiple of its patch size or stride)") from None
        self.channels, self.grid = probe.shape[1], tuple(probe.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(x)
        if features.dim() == 4:
            return features
        if features.dim() != 3:
            raise ConfigError(f"backbone gives features of shape {tuple(features.shape)}; expected a map or tokens")
        tokens = features[:, self.num_prefix_tokens:]
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise ConfigError(f"cannot reshape {tokens.shape[1]} tokens to a square grid")
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def create_backbone(name: str, weights: str | None = AUTO) -> tuple[nn.Module, WeightsInfo]:
    """Create a timm model without its classifier, with weights from a file, the HF cache, or random.

    ``weights`` is a path, ``"auto"`` (the HF cache if it holds this model, else random) or ``"random"``. Every
    path that rebuilds a model comes here (train, export, verify's reference), so the supported torch is checked
    here too, not only where a command starts.
    """
    import timm

    from auditor_rt.export.versions import require_export_versions

    require_export_versions()

    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        raise ConfigError(f"unknown timm backbone {name!r} ({exc}); see `timm.list_models()`") from None
    weights = weights or AUTO
    cached = hf_cache_file(model) if weights == AUTO else None
    if weights not in (AUTO, RANDOM):
        info = load_weights_file(model, Path(weights))
    elif cached is not None:
        info = load_weights_file(model, cached)  # recorded as a file with its digest, like --weights
    else:
        info = WeightsInfo(RANDOM, None)
        why = ("--weights random was asked for" if weights == RANDOM else
               "no --weights file was given and the Hugging Face cache does not hold it")
        warnings.warn(f"backbone {name!r} has RANDOM weights: {why}. Scores and maps mean little beyond a demo; "
                      "pass --weights PATH for real features.", RandomFeaturesWarning, stacklevel=2)
    model.eval().requires_grad_(False)
    return model, info


def load_weights_file(model: nn.Module, path: Path, require_head: bool = False) -> WeightsInfo:
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "model_state_dict"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
    except Exception as exc:  # torch.load and safetensors raise many types for a damaged file
        raise ConfigError(f"--weights {path}: not a readable weights file ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"--weights {path}: holds a {type(state).__name__}, not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: weights of another architecture
        detail = str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(f"--weights {path}: tensors do not fit this backbone ({detail}); is this file for the "
                          "same --backbone? (missing or mismatched tensors)") from None
    missing = [k for k in result.missing_keys if require_head or not k.startswith(("fc.", "head", "classifier"))]
    if missing:
        raise ConfigError(
            f"--weights {path}: {len(missing)} backbone tensors are missing (first: {missing[:3]}); "
            "is this file for the same --backbone?"
        )
    return WeightsInfo(str(path.resolve()), sha256_file(path))


def hf_cache_file(model: nn.Module) -> Path | None:
    """The model's pretrained weights file if the Hugging Face cache already holds it; never touches the network."""
    repo = (getattr(model, "pretrained_cfg", {}) or {}).get("hf_hub_id")
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached)
    return None


def preprocessing_of(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std that the backbone was trained with, from timm's pretrained config."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))

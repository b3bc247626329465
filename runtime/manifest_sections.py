"""The manifest's sections about the model and where it came from, typed: ``model`` (with its ``weights``),
``decision`` (beyond the threshold), ``training`` and ``heatmap``.

Every field is optional, so that the manifests of older artifacts load unchanged; each section keeps the keys it
does not know in ``extra`` and writes them back, so that a newer exporter can add facts without breaking an older
runtime. ``to_dict`` writes only what is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from auditor_rt.runtime.errors import ArtifactError

CLASSIFIER = "classifier"  # ModelInfo.kind of a plain classifier; a risk-head model records no kind


def _known_and_extra(cls, data: dict) -> tuple[dict, dict]:
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__.lower()} section is {type(data).__name__}, not an object")
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


def _set(values: dict) -> dict:
    return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class WeightsRecord:
    """Where the backbone's (or classifier's) weights came from: a file path, the HF cache, or ``random``. A risk
    head's checkpoint may hold the backbone itself (``file``, relative to the checkpoint folder)."""

    source: str | None = None
    sha256: str | None = None
    random: bool | None = None
    file: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "WeightsRecord":
        known, extra = _known_and_extra(cls, data)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "random": self.random, **_set({"file": self.file}),
                **self.extra}


@dataclass(frozen=True)
class ModelInfo:
    """The network: its timm ``backbone`` name and weights; a classifier's ``kind`` and ``num_classes``; a risk
    head's feature channels and grid."""

    backbone: str | None = None
    weights: WeightsRecord = field(default_factory=WeightsRecord)
    kind: str | None = None  # "classifier", or None for a risk head
    num_classes: int | None = None
    feature_channels: int | None = None
    feature_grid: tuple[int, ...] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.kind == CLASSIFIER

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        known, extra = _known_and_extra(cls, data)
        if "weights" in known:
            known["weights"] = WeightsRecord.from_dict(known["weights"] or {})
        if known.get("num_classes") is not None:
            known["num_classes"] = int(known["num_classes"])
        if known.get("feature_grid") is not None:
            known["feature_grid"] = tuple(int(v) for v in known["feature_grid"])
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        return {**_set({"kind": self.kind, "backbone": self.backbone, "num_classes": self.num_classes}),
                "weights": self.weights.to_dict(),
                **_set({"feature_channels": self.feature_channels,
                        "feature_grid": None if self.feature_grid is None else list(self.feature_grid)}),
                **self.extra}


@dataclass(frozen=True)
class Decision:
    """How a result is decided, beyond the threshold (``Manifest.threshold``): a classifier's ``rule``, or where
    and by what ``criterion`` a risk head's threshold was chosen."""

    rule: str | None = None
    chosen_on: str | None = None
    criterion: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "Decision":
        known, extra = _known_and_extra(cls, {k: v for k, v in data.items() if k != "threshold"})
        return cls(**known, extra=extra)

    def to_dict(self, threshold: float | None) -> dict:
        return {"threshold": threshold,
                **_set({"chosen_on": self.chosen_on, "criterion": self.criterion, "rule": self.rule}), **self.extra}


@dataclass(frozen=True)
class Training:
    """A risk head's training: validation ``metrics``, the checkpoint folder and its head's digest, the data."""

    metrics: dict = field(default_factory=dict)
    checkpoint: str | None = None
    head_sha256: str | None = None
    data: Any = None
    counts: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "Training":
        known, extra = _known_and_extra(cls, data)
        known["metrics"] = dict(known.get("metrics") or {})
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, **_set({"checkpoint": self.checkpoint, "head_sha256": self.head_sha256}),
                "data": self.data, **_set({"counts": self.counts}), **self.extra}


@dataclass(frozen=True)
class Heatmap:
    """The absolute heatmap scale chosen on validation data at training time: the risk-map value drawn as full heat,
    so that maps compare across images. ``scale`` None: none was found (no validation cell was positive).
    ``details`` says how it was chosen (chosen_on, percentile, images). Older manifests wrote the bare number."""

    scale: float | None
    details: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "Heatmap":
        extra = {k: v for k, v in data.items() if k != "absolute_scale"}
        recorded = data.get("absolute_scale")
        details = dict(recorded) if isinstance(recorded, dict) else {}
        scale = details.pop("risk_map_max", None) if isinstance(recorded, dict) else recorded
        return cls(_positive(scale), details, extra)

    def to_dict(self) -> dict:
        scale = {"risk_map_max": self.scale, **self.details} if self.details else self.scale
        return {"absolute_scale": scale, **self.extra}


def _positive(scale) -> float | None:
    if scale is None:
        return None
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ArtifactError(f"manifest: heatmap.absolute_scale {scale!r} is not a number; re-export it") from None
    if not value > 0 or value == float("inf"):
        raise ArtifactError(f"manifest: heatmap.absolute_scale {value} must be a positive number; re-export it")
    return value

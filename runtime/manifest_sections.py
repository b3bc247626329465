"""The manifest's sections about the model and where it came from, typed: ``model`` (with its ``weights``),
``decision`` (beyond the threshold), ``training`` and ``heatmap``.

Every field is optional, so that the manifests of older artifacts load unchanged; each section keeps the keys it
does not know in ``extra`` and writes them back, so that a newer exporter can add facts without breaking an older
runtime. ``to_dict`` writes only what is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

from auditor_rt.runtime.errors import ArtifactError

CLASSIFIER = "classifier"  # ModelInfo.kind of a plain classifier; a risk-head model records no kind


def _tuple_of(kind):
    return lambda values: tuple(kind(v) for v in values)


class Section:
    """A typed section: ``from_dict`` converts the known keys (``CONVERT``) and keeps the others in ``extra``;
    ``to_dict`` writes the fields in their declared order, those in ``ALWAYS`` even when None, then ``extra``."""

    CONVERT: ClassVar[dict[str, Callable]] = {}
    ALWAYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, data: dict):
        """A None value counts as missing: the field's default."""
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__.lower()} section is {type(data).__name__}, not an object")
        names = {f.name for f in fields(cls)}
        known = {k: cls.CONVERT.get(k, _same)(v) for k, v in data.items() if k in names - {"extra"} and v is not None}
        if "extra" in names:
            known["extra"] = {k: v for k, v in data.items() if k not in names}
        return cls(**known)

    def to_dict(self) -> dict:
        written = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and (value is not None or f.name in self.ALWAYS):
                written[f.name] = value.to_dict() if isinstance(value, Section) else (
                    list(value) if isinstance(value, tuple) else value)
        return {**written, **getattr(self, "extra", {})}


def _same(value):
    return value


@dataclass(frozen=True)
class WeightsRecord(Section):
    """Where the backbone's (or classifier's) weights came from: a file path, the HF cache, or ``random``. A risk
    head's checkpoint may hold the backbone itself (``file``, relative to the checkpoint folder)."""

    ALWAYS = ("source", "sha256", "random")

    source: str | None = None
    sha256: str | None = None
    random: bool | None = None
    file: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo(Section):
    """The network: its timm ``backbone`` name and weights; a classifier's ``kind`` and ``num_classes``; a risk
    head's feature channels and grid."""

    CONVERT = {"weights": lambda data: WeightsRecord.from_dict(data or {}), "num_classes": int,
               "feature_grid": _tuple_of(int)}

    backbone: str | None = None
    weights: WeightsRecord = field(default_factory=WeightsRecord)
    kind: str | None = None  # "classifier", or None for a risk head
    num_classes: int | None = None
    feature_channels: int | None = None
    feature_grid: tuple[int, ...] | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Decision(Section):
    """How a result is decided, beyond the threshold (``Manifest.threshold``): a classifier's ``rule``, or where
    and by what ``criterion`` a risk head's threshold was chosen."""

    rule: str | None = None
    chosen_on: str | None = None
    criterion: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "Decision":
        return super().from_dict({k: v for k, v in data.items() if k != "threshold"})

    def to_dict(self, threshold: float | None = None) -> dict:
        return {"threshold": threshold, **super().to_dict()}


@dataclass(frozen=True)
class Training(Section):
    """A risk head's training: validation ``metrics``, the checkpoint folder and its head's digest, the data."""

    CONVERT = {"metrics": dict}
    ALWAYS = ("data",)

    metrics: dict = field(default_factory=dict)
    checkpoint: str | None = None
    head_sha256: str | None = None
    data: Any = None
    counts: dict | None = None
    extra: dict = field(default_factory=dict)


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

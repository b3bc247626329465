"""The artifact contract between export/ and runtime/: ``manifest.json`` and the same facts in ONNX metadata.

The runtime reads only what it needs into typed fields (preprocessing, decision, graphs) and keeps the rest of the
document as-is, so that a newer exporter can add facts without breaking an older runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor_rt.runtime.errors import ArtifactError

SCHEMA_VERSION = 1
DTYPES = ("uint8", "float32", "float16", "int64", "int32", "bool")
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. Symbolic dims (e.g. ``"batch"``) are strings. An input has a ``role`` (image,
    noise, baseline, target: ``runtime/feeds.py``); artifacts written before roles were recorded have None, and
    the role is then read from the name."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    role: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "TensorSpec":
        if data["dtype"] not in DTYPES:
            raise ValueError(f"tensor {data.get('name')!r} has unknown dtype {data['dtype']!r} (known: {DTYPES})")
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]), role=data.get("role"))

    def to_dict(self) -> dict:
        data = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        return {**data, "role": self.role} if self.role else data


@dataclass(frozen=True)
class GraphEntry:
    file: str
    sha256: str
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "GraphEntry":
        known = {"file", "sha256", "kind", "inputs", "outputs", "opset"}
        return cls(
            file=data["file"],
            sha256=data["sha256"],
            kind=data["kind"],
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            opset=int(data["opset"]),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "kind": self.kind,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "opset": self.opset,
            **self.extra,
        }


@dataclass(frozen=True)
class Preprocess:
    """What a client must do before the graph: decode to RGB and resize. Normalisation is inside the graph."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: str = "RGB"
    layout: str = "NHWC"
    dtype: str = "uint8"
    resize: str = "stretch"

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        return cls(
            input_size=tuple(int(v) for v in data["input_size"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            color=data.get("color", "RGB"),
            layout=data.get("layout", "NHWC"),
            dtype=data.get("dtype", "uint8"),
            resize=data.get("resize", "stretch"),
        )

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "color": self.color,
            "layout": self.layout,
            "dtype": self.dtype,
            "resize": self.resize,
        }


@dataclass
class Manifest:
    name: str
    preprocess: Preprocess
    threshold: float | None  # None for a plain classifier: it has classes, not a risk decision
    graphs: dict[str, GraphEntry]
    document: dict[str, Any]

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> "Manifest":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"{source}: schema_version {version!r} is not supported (this runtime reads {SCHEMA_VERSION}); "
                "re-export the artifact with this version of auditor-rt"
            )
        try:
            return cls(
                name=data["name"],
                preprocess=Preprocess.from_dict(data["preprocess"]),
                threshold=None if data["decision"]["threshold"] is None else float(data["decision"]["threshold"]),
                graphs={key: GraphEntry.from_dict(g) for key, g in data["graphs"].items()},
                document=data,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: malformed manifest ({type(exc).__name__}: {exc}); re-export it") from None

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{path}: not found; is this an artifact folder written by `auditor-rt export`?") from None
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))

    @property
    def heatmap_scale(self) -> float | None:
        """The absolute heatmap scale chosen on validation data at training time: the risk-map value drawn as full
        heat, so that maps compare across images (a confident negative looks cool). ``None`` for artifacts exported
        before it existed, and for classifiers; then heatmaps fall back to the per-image scale."""
        scale = (self.document.get("heatmap") or {}).get("absolute_scale")
        if isinstance(scale, dict):
            scale = scale.get("risk_map_max")
        if scale is None:
            return None
        try:
            value = float(scale)
        except (TypeError, ValueError):
            raise ArtifactError(f"manifest: heatmap.absolute_scale {scale!r} is not a number; re-export it") from None
        if not value > 0 or value == float("inf"):
            raise ArtifactError(f"manifest: heatmap.absolute_scale {value} must be a positive number; re-export it")
        return value

    def to_dict(self) -> dict:
        data = dict(self.document)
        data.update(
            schema_version=SCHEMA_VERSION,
            name=self.name,
            preprocess=self.preprocess.to_dict(),
            graphs={key: g.to_dict() for key, g in self.graphs.items()},
        )
        data.setdefault("decision", {})["threshold"] = self.threshold
        return data

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

"""The artifact contract between export/ and runtime/: ``manifest.json`` and the same facts in ONNX metadata.

Every fact the code reads is a typed field (the sections about the model are in ``manifest_sections.py``); keys that
this runtime does not know are kept as they are and written back, so that a newer exporter can add facts without
breaking an older runtime. Facts that older artifacts lack are None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor_rt.runtime.errors import ArtifactError
from auditor_rt.runtime.manifest_sections import Decision, Heatmap, ModelInfo, Section, Training, _tuple_of

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


_GRAPH_FACTS = ("method", "params", "images_per_input", "map_output", "raw_output", "signed", "num_classes",
                "completeness", "tensorrt")


@dataclass(frozen=True)
class GraphEntry:
    """One graph of the artifact: its file and digest, its kind (audit, classify, attribution) and tensors. An
    attribution graph records its ``method`` and ``params``, how many images it runs per input image, which output
    is the map (``map_output``; ``raw_output`` before any post-processing), whether the map is ``signed``, and for
    IG the ``completeness`` check made at export; a classifier's graphs record ``num_classes`` (targets are checked
    against it). ``tensorrt``: what a static check against TensorRT's ONNX parser found at export (``parser``,
    ``findings``, ``count``). Keys this runtime does not know stay in ``extra``. Older artifacts lack some facts:
    None."""

    file: str
    sha256: str
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    method: str | None = None
    params: dict | None = None
    images_per_input: int | None = None
    map_output: str | None = None
    raw_output: str | None = None
    signed: bool | None = None
    num_classes: int | None = None
    completeness: dict | None = None
    tensorrt: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "GraphEntry":
        known = {"file", "sha256", "kind", "inputs", "outputs", "opset", *_GRAPH_FACTS}
        return cls(
            file=data["file"],
            sha256=data["sha256"],
            kind=data["kind"],
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            opset=int(data["opset"]),
            **{key: data.get(key) for key in _GRAPH_FACTS},
            extra={k: v for k, v in data.items() if k not in known},
        )

    def facts(self) -> dict:
        """The recorded facts beyond file, digest, kind and tensors (those set, and the unknown ones)."""
        return {**{key: getattr(self, key) for key in _GRAPH_FACTS if getattr(self, key) is not None}, **self.extra}

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "kind": self.kind,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "opset": self.opset,
            **self.facts(),
        }


@dataclass(frozen=True)
class Preprocess(Section):
    """What a client must do before the graph: decode to RGB and resize. Normalisation is inside the graph."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: str = "RGB"
    layout: str = "NHWC"
    dtype: str = "uint8"
    resize: str = "stretch"

    CONVERT = {"input_size": _tuple_of(int), "mean": _tuple_of(float), "std": _tuple_of(float)}


_SECTIONS = {"schema_version", "name", "created", "model", "head", "preprocess", "decision", "training", "versions",
             "heatmap", "data_files", "graphs"}


@dataclass
class Manifest:
    """The whole manifest, typed. ``document`` keeps the top-level keys this runtime does not know, as they are."""

    name: str
    preprocess: Preprocess
    threshold: float | None  # None for a plain classifier: it has classes, not a risk decision
    graphs: dict[str, GraphEntry]
    document: dict[str, Any] = field(default_factory=dict)
    model: ModelInfo = field(default_factory=ModelInfo)
    decision: Decision = field(default_factory=Decision)
    head: dict | None = None  # a risk head's configuration (channels, pooling, topk_fraction, hidden)
    training: Training | None = None
    heatmap: Heatmap | None = None
    versions: dict[str, str] = field(default_factory=dict)  # of the exporter's packages
    data_files: dict[str, str] = field(default_factory=dict)  # shared files the graphs read (weights.bin): sha256
    created: str | None = None

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> "Manifest":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"{source}: schema_version {version!r} is not supported (this runtime reads {SCHEMA_VERSION}); "
                "re-export the artifact with this version of auditor-rt"
            )
        try:
            decision = data["decision"]
            return cls(
                name=data["name"],
                preprocess=Preprocess.from_dict(data["preprocess"]),
                threshold=None if decision["threshold"] is None else float(decision["threshold"]),
                graphs={key: GraphEntry.from_dict(g) for key, g in data["graphs"].items()},
                document={k: v for k, v in data.items() if k not in _SECTIONS},
                model=ModelInfo.from_dict(data.get("model") or {}),
                decision=Decision.from_dict(decision),
                head=data.get("head"),
                training=None if data.get("training") is None else Training.from_dict(data["training"]),
                heatmap=None if data.get("heatmap") is None else Heatmap.from_dict(data["heatmap"]),
                versions=dict(data.get("versions") or {}),
                data_files=dict(data.get("data_files") or {}),
                created=data.get("created"),
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
        """The absolute heatmap scale (``Heatmap``): the risk-map value drawn as full heat. ``None`` for artifacts
        exported before it existed, and for classifiers; then heatmaps fall back to the per-image scale."""
        return None if self.heatmap is None else self.heatmap.scale

    def to_dict(self) -> dict:
        optional = {"head": self.head, "training": None if self.training is None else self.training.to_dict(),
                    "versions": self.versions or None,
                    "heatmap": None if self.heatmap is None else self.heatmap.to_dict(),
                    "data_files": self.data_files or None}
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            **({"created": self.created} if self.created else {}),
            "model": self.model.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "decision": self.decision.to_dict(self.threshold),
            **{key: value for key, value in optional.items() if value is not None},
            "graphs": {key: g.to_dict() for key, g in self.graphs.items()},
            **self.document,
        }

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

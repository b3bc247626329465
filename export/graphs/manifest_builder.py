"""The one place that writes an artifact's manifest (for risk-head and classifier exports alike) and the facts that
each ONNX file carries in its metadata."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from auditor_rt.export.versions import exporter_versions
from auditor_rt.runtime.manifest import SCHEMA_VERSION, GraphEntry, Manifest, Preprocess
from auditor_rt.runtime.manifest_sections import Decision, Heatmap, ModelInfo, Training


def new_manifest(name: str, preprocess: Preprocess, model: ModelInfo, threshold: float | None, decision: Decision,
                 head: dict | None = None, training: Training | None = None,
                 heatmap: Heatmap | None = None) -> Manifest:
    """The manifest of an export, before its graphs: the writer adds each graph's entry and the shared data files,
    and writes it last (``Manifest.write``)."""
    return Manifest(name=name, preprocess=preprocess, threshold=None if threshold is None else float(threshold),
                    graphs={}, model=model, decision=decision, head=head, training=training, heatmap=heatmap,
                    versions=exporter_versions(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def graph_metadata(manifest: Manifest, key: str, entry: GraphEntry) -> dict[str, str]:
    """Key facts as ONNX metadata_props, plus the whole manifest but digests (a file cannot hold its own) and the
    other graphs."""
    document = {k: v for k, v in manifest.to_dict().items() if k not in ("graphs", "data_files")}
    graph = {k: v for k, v in entry.to_dict().items() if k not in ("file", "sha256")}
    return {
        "auditor_rt.schema_version": str(SCHEMA_VERSION), "auditor_rt.graph": key,
        "auditor_rt.backbone": str(manifest.model.backbone),
        "auditor_rt.weights_sha256": str(manifest.model.weights.sha256),
        "auditor_rt.preprocess": json.dumps(manifest.preprocess.to_dict()),
        "auditor_rt.threshold": str(manifest.threshold),
        "auditor_rt.head": json.dumps(manifest.head),
        **({"auditor_rt.heatmap": json.dumps(manifest.heatmap.to_dict())} if manifest.heatmap else {}),
        "auditor_rt.manifest": json.dumps({**document, "graph": {"key": key, **graph}}),
    }

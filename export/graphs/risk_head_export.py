"""Export a trained risk head (``auditor-rt train``'s checkpoint) over its backbone: the ``audit`` graph and one
graph per attribution method, with the manifest that describes them."""

from __future__ import annotations

from pathlib import Path

from auditor_rt.export.conversion.torch_to_onnx import DEFAULT_OPSET
from auditor_rt.export.graphs.artifact_writer import (ExportResult, GraphJob, attribution_jobs, example_images,
                                                      prepare_folder, write_artifact)
from auditor_rt.export.graphs.manifest_builder import new_manifest
from auditor_rt.export.models.audit_module import AuditModule
from auditor_rt.export.models.backbone import Normalize
from auditor_rt.export.models.checkpoint import HEAD_NAME, Checkpoint
from auditor_rt.runtime.artifact import sha256_file
from auditor_rt.runtime.manifest import Manifest, Preprocess
from auditor_rt.runtime.manifest_sections import Decision, Heatmap, ModelInfo, Training, WeightsRecord


def build_audit_module(checkpoint: Checkpoint) -> AuditModule:
    cfg = checkpoint.config
    normalize = Normalize(cfg["mean"], cfg["std"])
    return AuditModule(normalize, checkpoint.build_backbone(), checkpoint.head, checkpoint.input_size).eval()


def export_artifact(checkpoint: Checkpoint, out_dir: str | Path, name: str | None = None,
                    opset: int = DEFAULT_OPSET, check: bool = True, attributions=(),
                    attribution_params: dict | None = None, progress=None, target: str = "onnxruntime") -> ExportResult:
    """Export the audit graph (and one graph per attribution method) of a risk-head ``checkpoint``. Progress lines
    go to stderr unless ``progress`` is given (``Progress.silent()`` for none)."""
    audit = build_audit_module(checkpoint)
    example = example_images(checkpoint.input_size)
    jobs = [GraphJob("audit", audit, "audit")]
    jobs += attribution_jobs(audit, example, attributions, attribution_params or {}, target=target)
    folder, created = prepare_folder(out_dir)
    manifest = risk_head_manifest(checkpoint, audit, name or folder.name)
    return write_artifact(folder, jobs, manifest, example, opset, check, progress, created, target)


def risk_head_manifest(checkpoint: Checkpoint, audit: AuditModule, name: str) -> Manifest:
    """The manifest's facts about the model, its preprocessing, its decision and where it came from."""
    cfg = checkpoint.config
    model = ModelInfo(backbone=cfg["backbone"], weights=WeightsRecord.from_dict(cfg["weights"]),
                      feature_channels=cfg["head"]["channels"], feature_grid=tuple(audit.features.grid))
    training = Training(metrics=cfg.get("metrics", {}), checkpoint=str(checkpoint.folder.resolve()),
                        head_sha256=sha256_file(checkpoint.folder / HEAD_NAME), data=cfg.get("data"),
                        counts=cfg.get("data_counts", {}))
    heatmap = Heatmap.from_dict({"absolute_scale": cfg["heatmap_scale"]}) if cfg.get("heatmap_scale") else None
    return new_manifest(name, Preprocess(input_size=checkpoint.input_size, mean=tuple(cfg["mean"]),
                                         std=tuple(cfg["std"])),
                        model, cfg["threshold"], Decision(chosen_on="validation", criterion="max balanced accuracy"),
                        head=cfg["head"], training=training, heatmap=heatmap)

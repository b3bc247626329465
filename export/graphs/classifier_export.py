"""Export a plain timm classifier (the user's own model, with its own head) for auditing: a ``classify`` graph and
attribution graphs whose class to explain is an int64 ``target`` input (-1: the predicted class)."""

from __future__ import annotations

from pathlib import Path

from auditor_rt.export.conversion.torch_to_onnx import DEFAULT_OPSET
from auditor_rt.export.graphs.artifact_writer import (ExportResult, GraphJob, attribution_jobs, example_images,
                                                      prepare_folder, write_artifact)
from auditor_rt.export.graphs.manifest_builder import new_manifest
from auditor_rt.export.models.backbone import AUTO, Normalize, preprocessing_of
from auditor_rt.export.models.classifier import ClassifierModule, create_classifier
from auditor_rt.runtime.manifest import Preprocess
from auditor_rt.runtime.manifest_sections import CLASSIFIER, Decision, ModelInfo, WeightsRecord


def export_classifier_artifact(name: str, out_dir: str | Path, weights: str = AUTO, num_classes: int | None = None,
                               input_size: int | None = None, attributions=(), attribution_params=None,
                               opset: int = DEFAULT_OPSET, check: bool = True, progress=None,
                               target: str = "onnxruntime") -> ExportResult:
    model, info = create_classifier(name, weights, num_classes)
    size = input_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    mean, std = preprocessing_of(model)
    classifier = ClassifierModule(Normalize(mean, std), model, (size, size)).eval()
    example = example_images((size, size))
    jobs = [GraphJob("classify", classifier, "classify")]
    # num_classes: the runtime checks targets against it
    jobs += attribution_jobs(classifier, example, attributions, attribution_params or {},
                             num_classes=classifier.num_classes, target=target)
    folder, created = prepare_folder(out_dir)
    preprocess = Preprocess(input_size=(size, size), mean=tuple(mean), std=tuple(std))
    weights_record = WeightsRecord(source=info.source, sha256=info.sha256, random=info.is_random)
    model_info = ModelInfo(kind=CLASSIFIER, backbone=name, num_classes=classifier.num_classes, weights=weights_record)
    manifest = new_manifest(folder.name, preprocess, model_info, None, Decision(rule="argmax over classes"))
    return write_artifact(folder, jobs, manifest, example, opset, check, progress, created, target)

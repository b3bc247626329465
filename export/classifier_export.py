"""Export a plain timm classifier (the user's own model, with its own head) for auditing: a ``classify`` graph and
attribution graphs whose class to explain is an int64 ``target`` input (-1: the predicted class)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import torch

from auditor_rt.export.backbone import AUTO, RANDOM, Normalize, hf_cache_file, load_weights_file, preprocessing_of
from auditor_rt.export.classifier import ClassifierModule
from auditor_rt.export.artifact_writer import GraphJob, attribution_jobs, write_artifact
from auditor_rt.export.onnx_export import DEFAULT_OPSET, ExportResult, example_images, prepare_folder, versions
from auditor_rt.runtime.errors import ConfigError
from auditor_rt.runtime.manifest import SCHEMA_VERSION, Preprocess


def create_classifier(name: str, weights: str = AUTO, num_classes: int | None = None):
    """A timm classifier with its head, and where its weights came from (a file, the HF cache, or random)."""
    import timm
    import warnings

    from auditor_rt.export.backbone import RandomFeaturesWarning, WeightsInfo

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


def export_classifier_artifact(name: str, out_dir: str | Path, weights: str = AUTO, num_classes: int | None = None,
                               input_size: int | None = None, attributions=(), attribution_params=None,
                               opset: int = DEFAULT_OPSET, check: bool = True, progress=None) -> ExportResult:
    model, info = create_classifier(name, weights, num_classes)
    size = input_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    mean, std = preprocessing_of(model)
    classifier = ClassifierModule(Normalize(mean, std), model, (size, size)).eval()
    example = example_images((size, size))
    jobs = [GraphJob("classify", classifier, "classify")]
    # num_classes: the runtime checks targets against it
    jobs += attribution_jobs(classifier, example, attributions, attribution_params or {},
                             extra={"num_classes": classifier.num_classes})
    folder, created = prepare_folder(out_dir)
    preprocess = Preprocess(input_size=(size, size), mean=tuple(mean), std=tuple(std))
    document = {
        "schema_version": SCHEMA_VERSION,
        "name": folder.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"kind": "classifier", "backbone": name, "num_classes": classifier.num_classes,
                  "weights": {"source": info.source, "sha256": info.sha256, "random": info.is_random}},
        "preprocess": preprocess.to_dict(),
        "decision": {"threshold": None, "rule": "argmax over classes"},
        "versions": versions(),
    }
    return write_artifact(folder, jobs, document, example, opset, check, progress, created)

"""The PyTorch reference of an artifact, rebuilt from what its manifest records: the backbone and the digest of its
weights, the head checkpoint, the preprocessing, and each attribution graph's method and parameters.

Attribution references take their gradients with PyTorch's own autograd (``create_attribution(eager=True)``), not
with the compiled graphs that were exported, so that ``verify`` checks the compiler too. Each reference exists in FP32 and in
FP64: FP64 is what outputs are compared with, and PyTorch's own FP32 error against it is the noise floor.

A file that is not the one the manifest names is a finding, not a crash: ``ReferenceModel.findings`` says which.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from auditor_rt.export.attribution import create_attribution
from auditor_rt.export.attribution.methods import Attribution
from auditor_rt.export.models.backbone import RANDOM, FeatureExtractor, Normalize, create_backbone
from auditor_rt.export.models.checkpoint import BACKBONE_NAME, CONFIG_NAME, HEAD_NAME, load_checkpoint
from auditor_rt.export.models.audit_module import AuditModule
from auditor_rt.runtime.artifact import Artifact, sha256_file
from auditor_rt.runtime.errors import ArtifactError
from auditor_rt.runtime.manifest import Preprocess
from auditor_rt.runtime.manifest_sections import Training
from auditor_rt.runtime.methods import METHODS

# Informational parameters that the manifest records beside the constructor's own.
# Training decodes every image to RGB (export/training/data/loader.py); a checkpoint config may say otherwise in "color".
TRAINED_COLOR = "RGB"


@dataclass
class ReferenceModel:
    """``modules[graph]`` = (FP32 module, FP64 module), each called with the graph's inputs as torch tensors."""

    modules: dict[str, tuple[torch.nn.Module, torch.nn.Module]]
    base: tuple[torch.nn.Module, torch.nn.Module]  # the audit (or classifier) module in FP32 and FP64
    findings: list[str] = field(default_factory=list)  # files or facts that differ from the manifest
    description: str = ""
    notes: list[str] = field(default_factory=list)  # what could not be checked (older manifests record less)


def build_reference(artifact: Artifact, checkpoint: str | Path | None = None,
                    graphs: list[str] | None = None) -> ReferenceModel:
    """The torch modules of ``graphs`` (default: every graph of the artifact). ``checkpoint`` overrides the head
    checkpoint folder that the manifest records (for an artifact moved to another machine)."""
    names = graphs or list(artifact.manifest.graphs)
    findings: list[str] = []
    notes: list[str] = []
    if "classify" in artifact.manifest.graphs:  # as Auditor.load tells the kinds apart
        base, description = _classifier(artifact, findings)
    else:
        base, description = _risk_head(artifact, checkpoint, findings, notes)
    base64 = copy.deepcopy(base).double()
    example = torch.zeros(2, *artifact.manifest.preprocess.input_size, 3, dtype=torch.uint8)
    modules = {}
    for name in names:
        entry = artifact.graph(name)
        if entry.kind in ("audit", "classify"):
            modules[name] = (base, base64)
            continue
        method = entry.method or name
        params = constructor_params(method, entry.params or {})
        fp32 = create_attribution(method, base, example, eager=True, **params)
        fp64 = create_attribution(method, base64, example, eager=True, **params)
        modules[name] = (fp32, fp64)
    return ReferenceModel(modules, (base, base64), findings, description, notes)


def constructor_params(method: str, params: dict) -> dict:
    """An attribution graph's recorded parameters, as its constructor takes them: those its method declares
    (``runtime/methods.py``); a manifest also records facts that are not parameters, such as IG's quadrature rule."""
    declared = METHODS.get(method)
    if declared is None:
        return dict(params)
    names = {param.name for param in declared.params}
    return {key: value for key, value in params.items() if key in names}


def fp64_twin(module: torch.nn.Module, input_size: tuple[int, int]) -> torch.nn.Module:
    """The same computation in FP64 with PyTorch's own autograd: an audit or classifier module cast to double, or
    an attribution module rebuilt eagerly over the double copy of its model."""
    if not isinstance(module, Attribution):
        return copy.deepcopy(module).double()
    example = torch.zeros(2, *input_size, 3, dtype=torch.uint8)
    return create_attribution(module.method, copy.deepcopy(module.model).double(), example, eager=True,
                              **constructor_params(module.method, module.params()))


def _check_file(path: Path, expected: str | None, what: str, findings: list[str]) -> None:
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected:
        findings.append(f"{what} {path}: SHA-256 {actual[:16]}… is not the manifest's {expected[:16]}…")


def _risk_head(artifact: Artifact, checkpoint: str | Path | None, findings: list[str],
               notes: list[str]) -> tuple[AuditModule, str]:
    manifest = artifact.manifest
    model, training, pre = manifest.model, manifest.training or Training(), manifest.preprocess
    folder = Path(checkpoint or training.checkpoint or "")
    if not (folder / HEAD_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise ArtifactError(f"the head checkpoint that the manifest names ({folder}) is not there (needs {HEAD_NAME} "
                            f"and {CONFIG_NAME}); pass --checkpoint DIR with the folder `auditor-rt train` wrote")
    trained = load_checkpoint(folder)
    _check_file(folder / HEAD_NAME, training.head_sha256, "head weights", findings)
    if not training.head_sha256:
        notes.append(f"the manifest records no digest of the head weights ({HEAD_NAME}); re-export to add it")
    recorded = {"backbone": model.backbone, "head": manifest.head, "input_size": list(pre.input_size),
                "mean": list(pre.mean), "std": list(pre.std)}
    for key, value in recorded.items():
        if value is not None and key in trained.config and _differs(trained.config[key], value):
            findings.append(f"{key}: the manifest says {value}, the checkpoint {folder / CONFIG_NAME} says "
                            f"{trained.config[key]}")
    _check_color(pre, trained.config.get("color", TRAINED_COLOR), f"the checkpoint {folder / CONFIG_NAME}", findings)
    weights = model.weights
    source = str(folder / weights.file) if weights.file else weights.source or RANDOM
    if source == RANDOM or not Path(source).is_file():
        raise ArtifactError(f"the backbone weights that the manifest names ({source}) are not there; they are "
                            f"needed to rebuild the reference (random weights are saved as {BACKBONE_NAME} in the "
                            "checkpoint folder)")
    _check_file(Path(source), weights.sha256, "backbone weights", findings)
    backbone, _ = create_backbone(model.backbone, source)
    size = tuple(pre.input_size)
    features = FeatureExtractor(backbone, size)
    normalize = Normalize(list(pre.mean), list(pre.std))
    audit = AuditModule(normalize, features, trained.head, size).eval().requires_grad_(False)
    return audit, f"{model.backbone} + risk head from {folder}"


def _classifier(artifact: Artifact, findings: list[str]):
    from auditor_rt.export.models.classifier import ClassifierModule
    from auditor_rt.export.models.classifier import create_classifier

    model, pre = artifact.manifest.model, artifact.manifest.preprocess
    source = model.weights.source or RANDOM
    if source == RANDOM or not Path(source).is_file():
        raise ArtifactError(f"the classifier weights that the manifest names ({source}) are not there; verify "
                            "rebuilds the model from them (an artifact exported with random weights cannot be "
                            "verified: they were not saved)")
    _check_file(Path(source), model.weights.sha256, "classifier weights", findings)
    _check_color(pre, TRAINED_COLOR, f"timm's {model.backbone} (timm models take RGB)", findings)
    network, _ = create_classifier(model.backbone, source, model.num_classes)
    module = ClassifierModule(Normalize(list(pre.mean), list(pre.std)), network, tuple(pre.input_size))
    return module.eval().requires_grad_(False), f"{model.backbone} classifier from {source}"


def _check_color(preprocess: Preprocess, trained: str, source: str, findings: list[str]) -> None:
    """The colour order the manifest tells clients to send must be the one the model learned: a BGR manifest over
    an RGB model swaps red and blue in every production input, and no tensor comparison can see it (the graph
    and the reference would both get the swapped images)."""
    stated = preprocess.color
    if str(stated).upper() != str(trained).upper():
        findings.append(f"colour order: the manifest says {stated}, but {source} was trained on {trained}; clients "
                        f"following the manifest would swap the channels (re-export, or fix preprocess.color)")


def _differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) > 1e-9 * max(1.0, abs(float(a)))
    return a != b
